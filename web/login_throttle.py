"""How many sign-in tries an account and an address get: a few free, then a wait that doubles.

flask-limiter counts requests in windows; a login throttle needs what it lacks: only failures
count, a success clears the account's count, and the wait grows with each failure past the cap.
So it is a small Redis script: one atomic step checks the locks and counts the try *before* the
password is checked, so twenty tries sent at once count twenty and the ones past the cap never
reach scrypt; and it lives in Redis, so every web process sees the same counts.
"""

import hashlib
import math
from dataclasses import dataclass

import redis

# The longest wait, and how long a count lasts after the last failure (or the end of its wait).
WINDOW_S = 15 * 60

# KEYS: account failures, account lock, address failures, address lock
# ARGV: first wait (s), account cap, address cap, window (s)
# Returns the milliseconds to wait (the try is not counted), or 0 (counted as a failure until it succeeds).
_ATTEMPT = """
local wait = math.max(redis.call('PTTL', KEYS[2]), redis.call('PTTL', KEYS[4]))
if wait > 0 then return wait end
local caps = {tonumber(ARGV[2]), tonumber(ARGV[3])}
for i = 1, 2 do
  local failures, lock, cap = KEYS[2 * i - 1], KEYS[2 * i], caps[i]
  local n = redis.call('INCR', failures)
  local lock_ms = 0
  if n >= cap then
    lock_ms = math.floor(math.min(tonumber(ARGV[1]) * 2 ^ (n - cap), tonumber(ARGV[4])) * 1000)
    redis.call('SET', lock, '1', 'PX', math.max(lock_ms, 1))
  end
  redis.call('PEXPIRE', failures, tonumber(ARGV[4]) * 1000 + lock_ms)
end
return 0
"""

# KEYS as above; ARGV: address cap. The account starts afresh; the address gives back this one try
# (a success is no failure), and the wait only this try could have started.
_SUCCEEDED = """
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('EXISTS', KEYS[3]) == 1 and redis.call('DECR', KEYS[3]) < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[4])
end
return 0
"""


def _key(kind: str, what: str, who: str) -> str:
    # Hashed: the name is whatever was typed, and the address may come from a header.
    return f"cutout:login:{kind}:{what}:{hashlib.sha256(who.encode()).hexdigest()[:32]}"


@dataclass
class LoginThrottle:
    r: redis.Redis
    account_cap: int = 5
    address_cap: int = 50
    first_wait_s: float = 30

    def __post_init__(self):
        self._attempt = self.r.register_script(_ATTEMPT)
        self._succeeded = self.r.register_script(_SUCCEEDED)

    def _keys(self, name: str, address: str) -> list[str]:
        return [_key(kind, what, who) for what, who in (("account", name), ("address", address))
                for kind in ("failures", "lock")]

    def attempt(self, name: str, address: str) -> int:
        """0 when this try may check its password, else the seconds to wait (the try is not counted)."""
        wait_ms = self._attempt(self._keys(name, address),
                                [self.first_wait_s, self.account_cap, self.address_cap, WINDOW_S])
        return math.ceil(int(wait_ms) / 1000)

    def succeeded(self, name: str, address: str) -> None:
        self._succeeded(self._keys(name, address), [self.address_cap])
