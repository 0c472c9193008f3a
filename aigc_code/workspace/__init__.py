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

__all__ = ["CopyCandidate", "IndexLimits", "RetrievedChunk", "WorkspaceIndex"]
