"""Which chunks of a file a node holds: one bit per chunk, bit ``i`` of byte ``i // 8``
(least significant first). Stored beside a partial file and sent to peers."""

from __future__ import annotations

__all__ = ["Bitmap"]


class Bitmap:
    __slots__ = ("_bits", "_count", "size")

    def __init__(self, size: int, data: bytes | None = None) -> None:
        self.size = size
        nbytes = (size + 7) // 8
        if data is not None and len(data) != nbytes:
            raise ValueError(f"bitmap of {size} chunks needs {nbytes} bytes, got {len(data)}")
        self._bits = bytearray(data) if data is not None else bytearray(nbytes)
        if size % 8 and self._bits:
            self._bits[-1] &= (1 << (size % 8)) - 1  # stray high bits are not chunks
        self._count = sum(bin(b).count("1") for b in self._bits)

    @classmethod
    def full(cls, size: int) -> Bitmap:
        bm = cls(size)
        for i in range(size):
            bm.set(i)
        return bm

    def __contains__(self, index: int) -> bool:
        return 0 <= index < self.size and bool(self._bits[index >> 3] >> (index & 7) & 1)

    def set(self, index: int) -> bool:
        """Mark chunk ``index``; True if it was not marked before."""
        if not 0 <= index < self.size:
            raise IndexError(f"chunk {index} of {self.size}")
        if index in self:
            return False
        self._bits[index >> 3] |= 1 << (index & 7)
        self._count += 1
        return True

    @property
    def count(self) -> int:
        return self._count

    @property
    def complete(self) -> bool:
        return self._count == self.size

    def missing(self) -> list[int]:
        return [i for i in range(self.size) if i not in self]

    def byte_of(self, index: int) -> tuple[int, int]:
        """(offset, value) of the byte that holds chunk ``index`` (to persist one bit)."""
        return index >> 3, self._bits[index >> 3]

    def to_bytes(self) -> bytes:
        return bytes(self._bits)
