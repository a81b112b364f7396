"""Testing helpers for applications built on shadows (the pytest plugin is ``plugin``)."""
