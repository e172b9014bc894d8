"""Every VM row of the hosts' ``HostReply``s: a host with more VMs than one reply
carries (``MonitorConfig.reply_rows``) answers page by page, and ``complete`` asks each
such host for the pages after its first reply, all hosts at once.

The later pages are cut from the listing the first page came from (``HostReply.listing``),
so VMs that come, go or are read again meanwhile shift no row. A host that stops
answering between pages, or that forgot the listing, keeps ``truncated`` set on its
reply: the callers treat its VM list as partial (``vm info`` names it; the namespace service does
not forget VMs of a host whose list is partial).
"""

from __future__ import annotations

from dataclasses import replace

import trio

from dvms.runtime.capabilities import Requester
from dvms.runtime.messages import HostQuery, HostReply, VmRow

__all__ = ["complete"]


async def complete(
    requests: Requester, replies: list[HostReply], namespace: str | None
) -> list[HostReply]:
    """``replies`` (first pages of ``HostQuery(namespace)``) with every VM row of each
    host, in the same order."""
    out = list(replies)

    async def rest(i: int) -> None:
        first = out[i]
        rows: list[VmRow] = list(first.vms)
        seen = {(v.namespace, v.name) for v in rows}
        offset = len(rows)
        truncated = True
        while truncated:
            query = HostQuery(namespace, offset=offset, listing=first.listing)
            page = await requests.ask_host(first.name, query)
            if not isinstance(page, HostReply) or not page.vms:
                break  # gone or changed meanwhile: the list stays partial
            offset += len(page.vms)
            new = [v for v in page.vms if (v.namespace, v.name) not in seen]
            seen.update((v.namespace, v.name) for v in new)
            rows += new
            truncated = page.truncated
            if not new:
                break
        out[i] = replace(first, vms=tuple(rows), truncated=truncated)

    async with trio.open_nursery() as nursery:
        for i, reply in enumerate(replies):
            if reply.truncated:
                nursery.start_soon(rest, i)
    return out
