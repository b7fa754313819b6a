"""Asking a cluster where keys went: which master serves them, how many each holds."""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio.cluster import ClusterNode, RedisCluster


async def primaries(client: RedisCluster) -> list[ClusterNode]:
    await client.initialize()
    return list(client.get_primaries())


async def keys_per_master(client: RedisCluster) -> dict[str, int]:
    """Each master's DBSIZE, by node name."""
    return {node.name: await client.dbsize(target_nodes=node) for node in await primaries(client)}


async def slot_of(client: RedisCluster, key: bytes | str) -> int:
    """CLUSTER KEYSLOT: asked of Redis, not computed here as the client does."""
    return int(await client.execute_command("CLUSTER", "KEYSLOT", key))


async def masters_of(client: RedisCluster, keys: Iterable[bytes | str]) -> set[str]:
    """The masters serving ``keys``, from the slots the cluster itself computes."""
    names = set()
    for key in keys:
        slot = await slot_of(client, key)
        names.add(client.nodes_manager.get_node_from_slot(slot).name)
    return names
