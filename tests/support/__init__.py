"""What the test modules share: helpers (imported as `from support.x import y`) and the
fixtures conftest.py and the browser modules use. No test module imports another test
module (tests/test_layout.py checks it): a shared helper lives here."""
