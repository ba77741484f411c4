"""The morning report (:mod:`leadml.report.html`): one self-contained HTML file per nightly run."""
