"""The basics every layer uses: errors, locations, the workdir ``Catalog``, the shared config and
the stage table."""
