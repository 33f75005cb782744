"""Regenerate tests/data/golden/*.png: the default pipeline's alpha (default model and options) for each test photo.

Run it only after checking by eye that a change to the pipeline improved the
cutouts (`python -m tests.make_golden`), and say so in the commit message.
"""

from matting_core import pipeline, preprocess
from matting_core.model import get_model
from matting_core.options import Options
from matting_core.registry import DEFAULT_MODEL
from tests.conftest import DATA, PHOTOS


def main() -> None:
    model = get_model(DEFAULT_MODEL, device="cpu", precision="fp32").load()  # as the tests run it
    for name in PHOTOS:
        data = (DATA / f"{name}.jpg").read_bytes()
        alpha = model.predict(preprocess.to_batch([pipeline.prepare(data, name, model.spec)]))[0]
        (DATA / "golden" / f"{name}.png").write_bytes(pipeline.finish(data, name, alpha, Options(mask=True)))


if __name__ == "__main__":
    main()
