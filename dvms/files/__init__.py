"""Files shared between peers, the sans-I/O part: manifests (content addressing), chunk
bitmaps, the swarm scheduler of one transfer, provider records, and store eviction.

The runtime (``dvms.runtime.services.files``) does the disk and stream I/O around these;
``docs/files.md`` describes the whole design.
"""

from dvms.files.bitmap import Bitmap
from dvms.files.config import FilesConfig
from dvms.files.evict import StoredFile, choose_victims
from dvms.files.manifest import Manifest, ManifestError, chunk_count
from dvms.files.providers import (
    PROVIDER_PREFIX,
    Provider,
    ProviderError,
    ProviderTable,
    provider_record,
)
from dvms.files.swarm import Swarm

__all__ = [
    "PROVIDER_PREFIX",
    "Bitmap",
    "FilesConfig",
    "Manifest",
    "ManifestError",
    "Provider",
    "ProviderError",
    "ProviderTable",
    "StoredFile",
    "Swarm",
    "choose_victims",
    "chunk_count",
    "provider_record",
]
