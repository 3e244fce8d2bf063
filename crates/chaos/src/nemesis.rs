//! The nemesis: one fault at a time, drawn from the seed, each healed
//! after 1–5 s; a new one starts 2–5 s after the previous one started (and
//! not before 1 s after it was healed). One fault at a time keeps a NATS quorum
//! (two of three nodes) and two replicas up. It also watches for replicas
//! that exit on their own, which is an anomaly.

use super::Shared;
use super::procs::{Procs, SIZE};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often crashed replicas are looked for, and the schedule checked.
const POLL: Duration = Duration::from_millis(100);
/// Salt so the nemesis draws differ from the clients' for one seed.
const SALT: u64 = 0x6E65_6D65_7369_7321;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9` a replica, restart it on its data dir.
    KillReplica(usize),
    /// SIGSTOP a replica, then SIGCONT.
    PauseReplica(usize),
    /// `kill -9` a replica, delete its data dir, restart it empty.
    WipeReplica(usize),
    /// `kill -9` a NATS node, restart it on its store.
    KillNats(usize),
    /// SIGSTOP a NATS node, then SIGCONT.
    PauseNats(usize),
    /// Strands a replica's proposals: SIGSTOP the NATS node it is connected
    /// to, let clients write to it for a moment, then `kill -9` both (so
    /// what the paused node had buffered is lost too); restart both. A
    /// replica that acknowledged a write before its commit loses it here.
    StrandReplica { replica: usize, nats: Option<usize> },
}

impl Fault {
    fn random(rng: &mut SmallRng) -> Fault {
        let target = rng.random_range(0..SIZE);
        match rng.random_range(0..6) {
            0 => Fault::KillReplica(target),
            1 => Fault::PauseReplica(target),
            2 => Fault::WipeReplica(target),
            3 => Fault::KillNats(target),
            4 => Fault::PauseNats(target),
            _ => Fault::StrandReplica { replica: target, nats: None },
        }
    }

    fn describe(self) -> String {
        match self {
            Fault::KillReplica(i) => format!("kill -9 replica r{}", i + 1),
            Fault::PauseReplica(i) => format!("SIGSTOP replica r{}", i + 1),
            Fault::WipeReplica(i) => format!("kill -9 replica r{} and wipe its data dir", i + 1),
            Fault::KillNats(i) => format!("kill -9 NATS node n{}", i + 1),
            Fault::PauseNats(i) => format!("SIGSTOP NATS node n{}", i + 1),
            Fault::StrandReplica { replica, nats: Some(n) } => {
                format!("strand replica r{}: SIGSTOP its NATS node n{}, then kill -9 both", replica + 1, n + 1)
            }
            Fault::StrandReplica { replica, nats: None } => {
                format!("strand replica r{} (not connected to NATS: kill -9 it only)", replica + 1)
            }
        }
    }
}

/// The processes, also after a thread panicked holding them (the state of
/// the child handles stays valid: every change is one assignment).
pub fn lock(procs: &Mutex<Procs>) -> MutexGuard<'_, Procs> {
    procs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs until the run stops; the fault in progress is healed before it
/// returns. With `faults` off it only watches for crashed replicas.
pub fn run(procs: &Mutex<Procs>, shared: &Shared, seed: u64, faults: bool) {
    let mut rng = SmallRng::seed_from_u64(seed ^ SALT);
    let mut active: Option<(Fault, Instant)> = None;
    let mut next_fault = Instant::now() + seconds(&mut rng, 2.0, 5.0);
    while !shared.stopped() {
        std::thread::sleep(POLL);
        lock(procs).restart_crashed(shared);
        if !faults {
            continue;
        }
        let now = Instant::now();
        match active {
            Some((fault, heal_at)) if now >= heal_at => {
                heal(procs, shared, fault);
                active = None;
                // A moment for the healed process to rejoin before the next fault.
                next_fault = next_fault.max(now + Duration::from_secs(1));
            }
            None if now >= next_fault => {
                let stranding = seconds(&mut rng, 0.3, 1.5);
                let fault = inject(procs, shared, Fault::random(&mut rng), stranding);
                active = Some((fault, now + seconds(&mut rng, 1.0, 5.0)));
                next_fault = now + seconds(&mut rng, 2.0, 5.0);
            }
            _ => {}
        }
    }
    if let Some((fault, _)) = active {
        heal(procs, shared, fault);
    }
}

fn seconds(rng: &mut SmallRng, min: f64, max: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(min..=max))
}

/// Injects `fault`; returns it as injected (a stranding names its NATS node).
fn inject(procs: &Mutex<Procs>, shared: &Shared, mut fault: Fault, stranding: Duration) -> Fault {
    if let Fault::StrandReplica { replica, .. } = fault {
        fault = Fault::StrandReplica { replica, nats: lock(procs).nats_node_of(replica) };
    }
    let n = shared.faults.fetch_add(1, Ordering::Relaxed) + 1;
    shared.say(format_args!("fault {n}: {}", fault.describe()));
    let mut p = lock(procs);
    match fault {
        Fault::KillReplica(i) => {
            p.note(i, "kill -9");
            p.kill(i);
        }
        Fault::PauseReplica(i) => {
            p.note(i, "SIGSTOP");
            p.pause(i);
        }
        Fault::WipeReplica(i) => {
            p.note(i, "kill -9, then the data dir is deleted");
            if let Err(e) = p.wipe(i) {
                shared.anomaly(format_args!("wiping replica r{}: {e}", i + 1));
            }
        }
        Fault::KillNats(i) => p.kill_nats(i),
        Fault::PauseNats(i) => p.pause_nats(i),
        Fault::StrandReplica { replica, nats } => {
            if let Some(n) = nats {
                p.pause_nats(n);
                // Clients keep writing to the replica meanwhile (not under the lock).
                drop(p);
                std::thread::sleep(stranding);
                p = lock(procs);
            }
            p.note(replica, "kill -9 (stranded from NATS)");
            p.kill(replica);
            if let Some(n) = nats {
                p.kill_nats(n);
            }
        }
    }
    fault
}

fn heal(procs: &Mutex<Procs>, shared: &Shared, fault: Fault) {
    let mut p = lock(procs);
    let healed = match fault {
        Fault::KillReplica(i) | Fault::WipeReplica(i) => {
            p.note(i, "restart");
            p.spawn(i)
        }
        Fault::PauseReplica(i) => {
            p.note(i, "SIGCONT");
            p.resume(i);
            Ok(())
        }
        Fault::KillNats(i) => p.restart_nats(i),
        Fault::PauseNats(i) => {
            p.resume_nats(i);
            Ok(())
        }
        Fault::StrandReplica { replica, nats } => nats.map_or(Ok(()), |n| p.restart_nats(n)).and_then(|()| {
            p.note(replica, "restart");
            p.spawn(replica)
        }),
    };
    match healed {
        Ok(()) => shared.say(format_args!("healed: {}", fault.describe())),
        Err(e) => shared.anomaly(format_args!("healing after `{}` failed: {e}", fault.describe())),
    }
}
