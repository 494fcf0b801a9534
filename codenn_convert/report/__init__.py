"""Reports of verification results: JSON, Markdown, HTML and JUnit renderings of one object.

The public names of the report, importable from here (the CLI uses ``report as rep``).
"""

from codenn_convert.report.render import (
    REPORT_FILES,
    build_report,
    environment,
    report_passed,
    schema,
    to_html,
    to_json,
    to_junit,
    to_markdown,
    write_json,
    write_reports,
)
from codenn_convert.report.shards import merge_environments, merge_reports, read_json_report

__all__ = ["REPORT_FILES", "build_report", "environment", "merge_environments",
           "merge_reports", "read_json_report", "report_passed", "schema", "to_html", "to_json",
           "to_junit", "to_markdown", "write_json", "write_reports"]
