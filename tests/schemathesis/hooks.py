"""Generators for the formats of the control plane's OpenAPI document that JSON Schema cannot
express: identifiers with check digits (DOMAIN.md §5) and dates the server accepts today.

Schemathesis (tests/tests/schemathesis.rs) loads this file through SCHEMATHESIS_HOOKS."""

import datetime

import schemathesis
from hypothesis import strategies as st


def _kbo(first8: int) -> str:
    # Enterprise number: 10 digits, the first 0 or 1, the last two 97 - (first eight mod 97).
    return f"{first8:08d}{97 - first8 % 97:02d}"


def _niss(day: datetime.date, serial: int) -> str:
    # National number: YYMMDD, a serial, and 97 - (the nine digits, prefixed by 2 after 1999,
    # mod 97). The birth date is a real day in the past.
    nine = f"{day:%y%m%d}{serial:03d}"
    base = int(("2" if day.year >= 2000 else "") + nine)
    return f"{nine}{97 - base % 97:02d}"


def _vcode(n: int) -> str:
    # The association register's vCode: V and 7 digits, from 1001 on.
    return f"V{n:07d}"


KBO = st.integers(min_value=0, max_value=19_999_999).map(_kbo)
PAST = st.dates(min_value=datetime.date(1920, 1, 1), max_value=datetime.date.today() - datetime.timedelta(days=1))
NISS = st.builds(_niss, PAST, st.integers(min_value=1, max_value=998))
VCODE = st.integers(min_value=1001, max_value=9_999_999).map(_vcode)
# Dates the control plane takes (validity ends, advice days): from today to the far future, so
# that "in the past" refusals, which no schema can state, are not what the run tests.
FUTURE = st.dates(min_value=datetime.date.today(), max_value=datetime.date(2099, 12, 31)).map(str)

schemathesis.openapi.format("kbo", KBO)
schemathesis.openapi.format("niss", NISS)
schemathesis.openapi.format("audit-subject", st.one_of(NISS, KBO, VCODE))
schemathesis.openapi.format("date", FUTURE)
schemathesis.openapi.media_type("application/toml", st.just(b'[[organisations]]\nkbo = "0123456749"\n'))
