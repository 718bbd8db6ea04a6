"""Built-in baseline models; importing this package registers them (see ``baseline.register``)."""
