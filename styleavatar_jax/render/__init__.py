"""Volume rendering as pure functions: rays, sampling along rays, tri-plane lookup, compositing."""
