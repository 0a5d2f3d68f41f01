"""Development-only code, not shipped in the package: the in-process loop the end-to-end tests,
the benches and `make demo` drive (lab Asterisk + SIPp + simulator + agent)."""
