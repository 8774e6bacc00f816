"""What a compile writes for people and tools to read.

- ``model``: the typed Report, one attribute per section, serialised to report.json's schema;
- ``build``: report.json, the contract other tools parse (schema in ``irq/schema``);
- ``html``: report.html, one self-contained page;
- ``text``: the one-line and table summaries the CLI and the demo print.
"""
