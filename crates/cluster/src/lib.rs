//! Cluster mode: every replica consumes one JetStream stream (the log) and
//! applies it; any replica accepts writes by proposing them to the stream.
//! Bursar writes no consensus code: JetStream supplies order, replication
//! and durability. See `docs/cluster.md`.

pub mod snapshot_objects;
