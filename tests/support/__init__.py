"""What every tier of the suite shares (tests/conftest.py describes the tiers):

  http        the one HTTP client: nginx at a base URL, or the app's unix
              socket; a source address of its own per client; raw bytes too
  waiting     the one waiter (``eventually``) and a stated rate (``Pace``)
  bounds      the product's timing promises, the only bounds a test asserts
  accounts    accounts and orders as tests need them, through either client
  errors      the API's error shape, asserted on any answer
  reporting   the one report printed at the end of a run (a pytest plugin)
  coherence   the coherence checker: histories of reads and writes, and their staleness
  servers     a Redis of a test's own, and a link to cut
  stack       the running stack's settings, as scripts/test.sh exports them

Nothing here needs a service to be imported: the unit tier imports it too.
"""

from pathlib import Path

# The checkout: where the tests find the project's files.
ROOT = Path(__file__).resolve().parents[2]
