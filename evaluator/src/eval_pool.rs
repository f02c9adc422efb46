//! The threads one-shot evaluations run on, kept and reused between requests.
//!
//! Every evaluation needs a thread with a large reserved stack (the evaluator recurses natively).
//! Creating one per request (mapping and unmapping its stack, waking it, joining it) costs a
//! daemon more than evaluating a small expression, so finished threads wait here for the next job.
//!
//! Invariants: a thread runs one job at a time (a [`run`] inside a job runs inline, on the same
//! thread) and nothing of a job outlives it: what the job handed to [`drop_after_answer`] (its
//! evaluator) is dropped, then the thread forgets its sources and flake context, all before the
//! thread takes its next job. That clean-up runs after the job's answer went back to its caller,
//! so a caller never waits for an evaluation's memory to be torn down (a tenth of a large
//! evaluation's instructions). The thread is offered as idle before the answer goes back, so the
//! caller's next request goes to the thread whose lowered sources are warm (waiting for the
//! clean-up there) rather than to a cold new one, which would parse everything again and keep a
//! second copy of the lowered sources. A thread that served [`JOBS_PER_THREAD`] jobs, saw a job
//! panic, or sat idle for [`IDLE_EXIT`] exits (except the last one waiting), so what a thread keeps
//! between jobs (interned names, compiled regular expressions, touched stack pages, lowered
//! sources within their budget: `crate::source::lowered`) stays bounded; at most [`MAX_IDLE`]
//! threads wait at once.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Reserved stack of an evaluation thread (only touched pages are committed).
const EVAL_STACK: usize = 1 << 30;
/// Threads kept waiting for work at most.
const MAX_IDLE: usize = 4;
/// Jobs one thread serves before it makes way for a fresh one.
const JOBS_PER_THREAD: usize = 1000;
/// An idle thread exits after this long without work, unless it is the only one waiting.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// A job: it runs the caller's function and leaves handing the result back to the worker, which
/// first offers its thread for the next job.
type Job = Box<dyn FnOnce() -> Ran + Send>;

/// What a job left for its worker.
struct Ran {
    /// Whether the function (or a [`run`] nested in it) panicked: the thread then retires.
    panicked: bool,
    /// Hands the result (or the panic's message) to the caller.
    answer: Box<dyn FnOnce()>,
}

thread_local! {
    /// Whether this thread is running a job of the pool (then [`run`] runs inline).
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
    /// Whether a [`run`] nested in the current job panicked (the thread then retires).
    static NESTED_PANIC: Cell<bool> = const { Cell::new(false) };
    /// What the current job keeps until its answer was handed back ([`drop_after_answer`]).
    static AFTER_ANSWER: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread is on the idle list since its last job ended (for tests).
    static OFFERED: Cell<bool> = const { Cell::new(false) };
}

/// Keeps `value` until the current job's answer has been handed to its caller, then drops it on
/// this thread before the thread takes another job. Outside a job of the pool it is dropped now.
///
/// For an evaluator: tearing its heap down is part of the request's cost but not of its answer.
pub(crate) fn drop_after_answer<T: 'static>(value: T) {
    if IN_JOB.get() {
        AFTER_ANSWER.with_borrow_mut(|kept| kept.push(Box::new(value)));
    } else {
        drop(value);
    }
}

/// An idle thread: its id and where to send its next job.
struct Idle {
    id: u64,
    jobs: Sender<Job>,
}

struct Pool {
    idle: Vec<Idle>,
    next_id: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    idle: Vec::new(),
    next_id: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic never happens while the lock is held (only pushes and pops), but stay usable anyway.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on an evaluation thread and returns what it returned. A panic in `f` is returned as
/// `Err` with its message. Called from a job of this pool, `f` runs right there (the thread
/// already has the large stack), so a job may use the blocking facade without a second hand-off.
pub(crate) fn run<R, F>(f: F) -> Result<R, String>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if IN_JOB.get() {
        let r = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
        if r.is_err() {
            NESTED_PANIC.set(true);
        }
        return r;
    }
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel::<Result<R, String>>(1);
    spawn(f, move |r| {
        let _ = reply_tx.send(r);
    })?;
    receive(reply_rx)
}

/// Runs `f` on an evaluation thread without waiting for it; `done` gets what `f` returned (or its
/// panic's message) on that thread. `Err` when no thread could be started (then neither runs).
pub(crate) fn spawn<R, F, D>(f: F, done: D) -> Result<(), String>
where
    F: FnOnce() -> R + Send + 'static,
    D: FnOnce(Result<R, String>) + Send + 'static,
    R: 'static,
{
    let mut job: Job = Box::new(move || {
        IN_JOB.set(true);
        OFFERED.set(false);
        let r = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
        IN_JOB.set(false);
        Ran {
            panicked: r.is_err() || NESTED_PANIC.replace(false),
            answer: Box::new(move || done(r)),
        }
    });
    // Hand the job to an idle thread; one that went away gives the job back (send fails).
    loop {
        let idle = pool().idle.pop();
        let Some(idle) = idle else { break };
        match idle.jobs.send(job) {
            Ok(()) => return Ok(()),
            Err(returned) => job = returned.0,
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let id = {
        let mut p = pool();
        p.next_id += 1;
        p.next_id
    };
    std::thread::Builder::new()
        .name("flaked-eval".to_string())
        .stack_size(EVAL_STACK)
        .spawn(move || worker(id, tx, rx, job))
        .map(|_| ())
        .map_err(|e| format!("cannot start the evaluator thread: {e}"))
}

fn receive<R>(reply: std::sync::mpsc::Receiver<Result<R, String>>) -> Result<R, String> {
    reply
        .recv()
        .unwrap_or_else(|_| Err("the evaluator thread exited without an answer".to_string()))
}

fn worker(id: u64, me: Sender<Job>, jobs: Receiver<Job>, first: Job) {
    let mut job = first;
    let mut served = 0usize;
    loop {
        let ran = job();
        served += 1;
        // Offer this thread for the next job before handing the answer back: a caller that sends
        // its next request as soon as it has this answer then finds this thread (whose lowered
        // sources are warm) and not an empty idle list (a cold new thread, which would parse
        // everything again and keep a second copy of the sources). That job waits in the channel
        // while this one is cleaned up after.
        let stays = !ran.panicked && served < JOBS_PER_THREAD && offer_idle(id, &me);
        (ran.answer)();
        forget_thread_state();
        if !stays {
            return;
        }
        job = match jobs.recv_timeout(IDLE_EXIT) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut p = pool();
                // The last waiting thread stays: its lowered sources (nixpkgs' `lib`, say) are
                // what the next request after a pause needs.
                if let Some(i) = p.idle.iter().position(|w| w.id == id)
                    && p.idle.len() > 1
                {
                    p.idle.remove(i);
                    return;
                }
                drop(p);
                // The last one waiting, or a caller took this thread off the idle list just now
                // (its job is on the way): wait for the next job.
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
    }
}

/// Puts this thread on the idle list unless [`MAX_IDLE`] threads wait already; whether it did.
fn offer_idle(id: u64, me: &Sender<Job>) -> bool {
    let mut p = pool();
    if p.idle.len() >= MAX_IDLE {
        return false;
    }
    p.idle.push(Idle {
        id,
        jobs: me.clone(),
    });
    OFFERED.set(true);
    true
}

/// Drops what the finished job kept for after its answer, then forgets what it left in this
/// thread's evaluator state (its lowered-source cache keeps only what no evaluation owns, within
/// its budget).
fn forget_thread_state() {
    // Newest first: an evaluation nested in a job goes before the job's own.
    while let Some(kept) = AFTER_ANSWER.with_borrow_mut(Vec::pop) {
        drop(kept);
    }
    crate::source::lowered::end_evaluation();
    crate::flake::set_context(None);
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_reused_and_answers_come_back() {
        // Other tests use the pool at the same time and may take a waiting thread, but fifty jobs
        // in a row on fifty different threads means nothing is reused.
        let threads: std::collections::HashSet<_> = (0..50)
            .map(|_| run(|| std::thread::current().id()).expect("runs"))
            .collect();
        assert!(threads.len() < 50, "no thread was reused");
        assert_eq!(run(|| 6 * 7), Ok(42));
    }

    #[test]
    fn a_panic_is_an_answer_and_the_pool_stays_usable() {
        let r: Result<(), String> = run(|| panic!("boom in a job"));
        assert_eq!(r, Err("boom in a job".to_string()));
        assert_eq!(run(|| "still here"), Ok("still here"));
    }

    #[test]
    fn spawned_jobs_answer_through_their_callback_and_nest_inline() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(
            || {
                let outer = std::thread::current().id();
                // A nested run stays on the job's own thread.
                let inner = run(|| std::thread::current().id()).expect("runs");
                (outer == inner, run(|| -> u8 { panic!("nested boom") }))
            },
            move |r| tx.send(r).expect("the test waits"),
        )
        .expect("spawns");
        let (same_thread, nested) = rx.recv().expect("answers").expect("no panic");
        assert!(same_thread);
        assert_eq!(nested, Err("nested boom".to_string()));
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(
            || -> u8 { panic!("spawned boom") },
            move |r| tx.send(r).expect("the test waits"),
        )
        .expect("spawns");
        assert_eq!(rx.recv().expect("answers"), Err("spawned boom".to_string()));
    }

    /// Records its drop, which waits until the test allows it.
    struct Kept {
        allow: std::sync::mpsc::Receiver<()>,
        dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Drop for Kept {
        fn drop(&mut self) {
            // Bounded, so that a broken pool fails the test instead of hanging it.
            let _ = self.allow.recv_timeout(Duration::from_secs(10));
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn what_a_job_keeps_is_dropped_after_its_answer() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dropped = Arc::new(AtomicBool::new(false));
        let (allow_tx, allow) = std::sync::mpsc::channel();
        let flag = dropped.clone();
        let answer = run(move || {
            drop_after_answer(Kept {
                allow,
                dropped: flag,
            });
            42
        });
        // The answer is here although the kept value cannot have been dropped yet.
        assert_eq!(answer, Ok(42));
        assert!(!dropped.load(Ordering::SeqCst));
        allow_tx.send(()).expect("the kept value waits");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "dropped on the job's thread"
        );

        // By the time the answer is handed back, the thread waits for its next job already
        // (unless other tests' threads fill the idle list).
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(
            || (),
            move |_| {
                let offered = OFFERED.get() || pool().idle.len() >= MAX_IDLE;
                tx.send(offered).expect("the test waits")
            },
        )
        .expect("spawns");
        assert!(rx.recv().expect("answers"), "offered before the answer");

        // Outside a job there is nothing to wait for: dropped at once.
        let dropped = Arc::new(AtomicBool::new(false));
        let (allow_tx, allow) = std::sync::mpsc::channel();
        allow_tx.send(()).expect("buffered");
        drop_after_answer(Kept {
            allow,
            dropped: dropped.clone(),
        });
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn concurrent_jobs_each_get_their_own_answer() {
        let handles: Vec<_> = (0..16)
            .map(|i| std::thread::spawn(move || run(move || i * 2)))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().expect("joins"), Ok(i * 2));
        }
    }
}
