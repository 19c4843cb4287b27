"""No import cycle anywhere in the package, counting imports inside functions (the layers and the
plug-in rule are import-linter contracts in setup.cfg, checked by make lint and make test)."""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("pipelines", exclude_type_checking_imports=True)
    cycles = {
        tuple(sorted((module, other)))
        for module in graph.modules
        for other in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=other, imported=module)
    }
    assert not cycles, [graph.find_shortest_chain(importer=b, imported=a) for a, b in sorted(cycles)]
