"""marshmallow schemas: the canonical consent payload and the configuration file."""
