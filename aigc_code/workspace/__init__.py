"""Repository-aware completion: an index of the workspace folders' source files.

`WorkspaceIndex(roots).build()` indexes the folders (in a background thread; queries work meanwhile);
`copy_candidates()` proposes the rest of the current line copied from where the same code occurs
(the buffer itself or other files); `retrieve()` returns code windows similar to the code at the
cursor, for the prompt. Pure Python + numpy, no LSP types.
"""

from .copy import CopyCandidate
from .files import IndexLimits
from .index import WorkspaceIndex
from .retrieve import RetrievedChunk

__all__ = ["CopyCandidate", "IndexLimits", "RetrievedChunk", "WorkspaceIndex", "build_index"]


def build_index(roots, settings) -> WorkspaceIndex:
    """An index of `roots` with the caps `settings` asks for, built now (outside the server, which
    builds in the background)."""
    index = WorkspaceIndex(roots, IndexLimits.from_settings(settings))
    index.build()
    return index
