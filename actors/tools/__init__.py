"""The built-in tools (SPEC §9) and the confinement they run under.

- ``runner``: the tools, their schemas and ``ToolRunner`` (timeouts, errors as results);
- ``workspace``: race-free opening of paths beneath the workspace root (``openat2`` or an
  ``O_NOFOLLOW`` walk);
- ``sandbox``: how an ``exec`` command is started, limited, capped and killed.
"""

from actors.tools.runner import BUILTIN_TOOLS, Tool, ToolContext, ToolResult, ToolRunner
from actors.tools.sandbox import ExecPolicy, hide_process_from_commands
from actors.tools.workspace import EscapesWorkspace, Workspace, openat2_available

__all__ = [
    "BUILTIN_TOOLS",
    "EscapesWorkspace",
    "ExecPolicy",
    "Tool",
    "ToolContext",
    "ToolResult",
    "ToolRunner",
    "Workspace",
    "hide_process_from_commands",
    "openat2_available",
]
