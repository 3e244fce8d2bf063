//! The supervision tree: restarts by strategy and policy, intensity and
//! escalation, nesting, and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bursar_runtime::supervisor::{Child, Escalation, Intensity, Restart, Strategy, Supervisor, WorkerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Generous: only a hang, never slowness, should fail a test.
const PATIENCE: Duration = Duration::from_secs(20);

fn lenient() -> Intensity {
    Intensity { max_restarts: 100, within: Duration::from_secs(60) }
}

/// Counts how often a worker started and how many of its runs were dropped.
#[derive(Clone, Default)]
struct Probe {
    starts: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Probe {
    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    /// Records a start; the guard records the end of the run when dropped.
    fn start(&self) -> (usize, DropGuard) {
        (self.starts.fetch_add(1, Ordering::SeqCst) + 1, DropGuard(Arc::clone(&self.drops)))
    }
}

struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A permanent worker that runs forever.
fn forever(name: &str, probe: &Probe) -> Child {
    forever_with(name, Restart::Permanent, probe)
}

fn forever_with(name: &str, restart: Restart, probe: &Probe) -> Child {
    let probe = probe.clone();
    Child::worker(name, restart, move || {
        let (_, guard) = probe.start();
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<(), WorkerError>(())
        }
    })
}

/// A worker that panics on its first run and then runs forever.
fn panics_once(name: &str, probe: &Probe) -> Child {
    let probe = probe.clone();
    Child::worker(name, Restart::Permanent, move || {
        let (start, guard) = probe.start();
        async move {
            let _guard = guard;
            if start == 1 {
                panic!("first run fails");
            }
            std::future::pending::<()>().await;
            Ok::<(), WorkerError>(())
        }
    })
}

/// A worker that always fails at once.
fn always_fails(name: &str, probe: &Probe) -> Child {
    let probe = probe.clone();
    Child::worker(name, Restart::Permanent, move || {
        let (start, guard) = probe.start();
        async move {
            drop(guard);
            Err(format!("failure #{start}"))
        }
    })
}

/// A worker that returns `first` on its first run and then runs forever.
fn exits_once(name: &str, restart: Restart, first: Result<(), String>, probe: &Probe) -> Child {
    let probe = probe.clone();
    Child::worker(name, restart, move || {
        let (start, guard) = probe.start();
        let first = first.clone();
        async move {
            let _guard = guard;
            if start == 1 {
                return first;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    })
}

fn spawn(sup: Supervisor) -> (watch::Sender<bool>, JoinHandle<Result<(), Escalation>>) {
    let (tx, rx) = watch::channel(false);
    (tx, tokio::spawn(sup.run(rx)))
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

async fn finish(handle: JoinHandle<Result<(), Escalation>>) -> Result<(), Escalation> {
    match tokio::time::timeout(PATIENCE, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => panic!("supervisor task failed: {join}"),
        Err(_) => panic!("supervisor did not finish"),
    }
}

async fn shut_down(tx: watch::Sender<bool>, handle: JoinHandle<Result<(), Escalation>>) {
    tx.send_replace(true);
    assert_eq!(finish(handle).await, Ok(()));
}

#[tokio::test]
async fn one_for_one_restarts_only_the_panicked_child() {
    let (crashy, sibling) = (Probe::default(), Probe::default());
    let sup = Supervisor::new("s", Strategy::OneForOne, lenient())
        .child(forever("sibling", &sibling))
        .child(panics_once("crashy", &crashy));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("crashy restarted", || crashy.starts() == 2).await;
    shut_down(tx, handle).await;

    assert_eq!(sibling.starts(), 1);
    assert_eq!((stats.restarts("crashy"), stats.restarts("sibling")), (1, 0));
    assert_eq!((crashy.drops(), sibling.drops()), (2, 1), "every run ended");
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let (a, b, c) = (Probe::default(), Probe::default(), Probe::default());
    let sup = Supervisor::new("s", Strategy::OneForAll, lenient())
        .child(forever("a", &a))
        .child(panics_once("b", &b))
        .child(forever("c", &c));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("all restarted", || a.starts() == 2 && b.starts() == 2 && c.starts() == 2).await;
    assert_eq!((a.drops(), c.drops()), (1, 1), "the siblings' first runs were stopped");
    shut_down(tx, handle).await;

    assert_eq!(stats.total_restarts(), 3);
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let (a, b, c) = (Probe::default(), Probe::default(), Probe::default());
    let sup = Supervisor::new("s", Strategy::RestForOne, lenient())
        .child(forever("a", &a))
        .child(panics_once("b", &b))
        .child(forever("c", &c));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("b and c restarted", || b.starts() == 2 && c.starts() == 2).await;
    shut_down(tx, handle).await;

    assert_eq!(a.starts(), 1);
    assert_eq!((stats.restarts("a"), stats.restarts("b"), stats.restarts("c")), (0, 1, 1));
}

#[tokio::test]
async fn exceeding_the_intensity_escalates_and_stops_all_children() {
    let (bad, long) = (Probe::default(), Probe::default());
    let intensity = Intensity { max_restarts: 3, within: Duration::from_secs(10) };
    let sup = Supervisor::new("s", Strategy::OneForOne, intensity)
        .child(forever("long", &long))
        .child(always_fails("bad", &bad));
    let stats = sup.stats();
    let (_tx, handle) = spawn(sup);

    let escalation = finish(handle).await.expect_err("the supervisor must give up");

    assert_eq!(escalation.supervisor, "s");
    assert!(escalation.reason.contains("`bad`") && escalation.reason.contains("failure #4"), "{escalation}");
    assert_eq!(bad.starts(), 4, "the first start and 3 restarts");
    assert_eq!((long.starts(), long.drops()), (1, 1), "the long-running sibling was stopped");
    assert_eq!(stats.escalations(), 1);
}

#[tokio::test]
async fn parent_restarts_an_escalating_child_supervisor_then_escalates_itself() {
    let (worker, sibling) = (Probe::default(), Probe::default());
    let inner =
        Supervisor::new("inner", Strategy::OneForOne, Intensity { max_restarts: 0, within: Duration::from_secs(10) })
            .child(always_fails("w", &worker));
    let inner_stats = inner.stats();
    let parent =
        Supervisor::new("parent", Strategy::OneForAll, Intensity { max_restarts: 2, within: Duration::from_secs(10) })
            .child(forever("sibling", &sibling))
            .child(Child::supervisor(inner));
    let stats = parent.stats();
    let (_tx, handle) = spawn(parent);

    let escalation = finish(handle).await.expect_err("the parent must give up");

    assert_eq!(escalation.supervisor, "parent");
    assert!(escalation.reason.contains("supervisor `inner` gave up"), "{escalation}");
    assert_eq!(worker.starts(), 3, "inner ran three times, escalating at its first failure each time");
    assert_eq!(inner_stats.escalations(), 3);
    assert_eq!(stats.restarts("inner"), 2);
    assert_eq!(sibling.starts(), 3, "one-for-all restarted the sibling with the inner supervisor");
    assert_eq!(sibling.drops(), 3, "every run of the sibling was stopped");
}

#[tokio::test]
async fn shutdown_stops_the_whole_tree() {
    let (top, nested) = (Probe::default(), Probe::default());
    let inner = Supervisor::new("inner", Strategy::OneForOne, lenient()).child(forever("nested", &nested));
    let sup = Supervisor::new("root", Strategy::OneForOne, lenient())
        .child(forever("top", &top))
        .child(Child::supervisor(inner));
    let (tx, handle) = spawn(sup);

    wait_until("all started", || top.starts() == 1 && nested.starts() == 1).await;
    shut_down(tx, handle).await;

    assert_eq!((top.drops(), nested.drops()), (1, 1));
}

#[tokio::test]
async fn shutdown_before_start_returns_ok() {
    let probe = Probe::default();
    let (tx, rx) = watch::channel(true);
    let sup = Supervisor::new("s", Strategy::OneForOne, lenient()).child(forever("w", &probe));

    assert_eq!(tokio::time::timeout(PATIENCE, sup.run(rx)).await, Ok(Ok(())));
    drop(tx);
    assert_eq!(probe.starts(), 0);
}

#[tokio::test]
async fn transient_child_is_restarted_only_after_a_failure() {
    let (done, failed) = (Probe::default(), Probe::default());
    let sup = Supervisor::new("s", Strategy::OneForOne, lenient())
        .child(exits_once("done", Restart::Transient, Ok(()), &done))
        .child(exits_once("failed", Restart::Transient, Err("boom".into()), &failed));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("both exits handled", || stats.exits("done") == 1 && stats.exits("failed") == 1).await;
    shut_down(tx, handle).await;

    assert_eq!((done.starts(), stats.restarts("done")), (1, 0));
    assert_eq!((failed.starts(), stats.restarts("failed")), (2, 1));
}

#[tokio::test]
async fn permanent_child_is_restarted_after_a_normal_exit() {
    let probe = Probe::default();
    let sup =
        Supervisor::new("s", Strategy::OneForOne, lenient()).child(exits_once("p", Restart::Permanent, Ok(()), &probe));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("restarted", || probe.starts() == 2).await;
    shut_down(tx, handle).await;

    assert_eq!(stats.restarts("p"), 1);
}

#[tokio::test]
async fn temporary_child_is_not_restarted_after_a_failure() {
    let probe = Probe::default();
    let sup = Supervisor::new("s", Strategy::OneForOne, lenient()).child(exits_once(
        "temp",
        Restart::Temporary,
        Err("boom".into()),
        &probe,
    ));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("exit handled", || stats.exits("temp") == 1).await;
    shut_down(tx, handle).await;

    assert_eq!((probe.starts(), stats.restarts("temp")), (1, 0));
}

#[tokio::test]
async fn temporary_child_stopped_by_a_sibling_failure_is_not_restarted() {
    let (temp, crashy) = (Probe::default(), Probe::default());
    let sup = Supervisor::new("s", Strategy::OneForAll, lenient())
        .child(forever_with("temp", Restart::Temporary, &temp))
        .child(panics_once("crashy", &crashy));
    let stats = sup.stats();
    let (tx, handle) = spawn(sup);

    wait_until("crashy restarted", || crashy.starts() == 2).await;
    assert_eq!(temp.drops(), 1, "the group restart stopped the temporary child");
    shut_down(tx, handle).await;

    assert_eq!((temp.starts(), stats.restarts("temp")), (1, 0));
}

#[tokio::test]
async fn dropping_the_shutdown_sender_stops_the_supervisor() {
    let probe = Probe::default();
    let sup = Supervisor::new("s", Strategy::OneForOne, lenient()).child(forever("w", &probe));
    let (tx, handle) = spawn(sup);

    wait_until("started", || probe.starts() == 1).await;
    drop(tx);

    assert_eq!(finish(handle).await, Ok(()));
    assert_eq!(probe.drops(), 1);
}
