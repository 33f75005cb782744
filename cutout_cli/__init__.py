"""The `cutout` command line: batch and single-image cutouts in process, and weight fetching."""
