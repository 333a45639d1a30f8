"""Support code for the tests: live servers, clients and browsers."""
