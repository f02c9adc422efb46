//! The scheduler: one build per derivation under 100 concurrent overlapping requests,
//! parallelism bounded by max_jobs, failure propagation and keep-going, cancellation when
//! the requester goes away, progress events.

#[path = "build/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flaked_store::StorePath;
use flaked_store::build::{
    BuildError, BuildEvent, BuildOptions, BuildPool, CancelToken, DerivedPath,
};
use support::*;

/// A layered graph: `width` derivations per layer, each depending on two of the previous layer.
fn layered(t: &TestStore, layers: usize, width: usize, tag: &str) -> Vec<Vec<StorePath>> {
    let mut all: Vec<Vec<StorePath>> = Vec::new();
    for l in 0..layers {
        let mut layer = Vec::new();
        for i in 0..width {
            let inputs: Vec<&StorePath> = match all.last() {
                None => vec![],
                Some(prev) => vec![&prev[i], &prev[(i + 1) % width]],
            };
            let script = format!("echo {tag}-{l}-{i} > $out");
            layer.push(mk_drv(
                &t.store,
                &format!("{tag}-{l}-{i}"),
                "/bin/sh",
                &script,
                &[],
                &inputs,
            ));
        }
        all.push(layer);
    }
    all
}

#[test]
fn hundred_concurrent_overlapping_requests_build_each_derivation_once() {
    let t = test_store();
    let graph = layered(&t, 4, 5, "conc");
    let pool = Arc::new(BuildPool::new(t.store.clone(), settings(&t)));
    let tops: Vec<StorePath> = graph.last().expect("layers").clone();
    let mut handles = Vec::new();
    for k in 0..100 {
        let pool = pool.clone();
        let targets: Vec<DerivedPath> = (0..2)
            .map(|j| all_outputs(tops[(k + j * 2) % tops.len()].clone()))
            .collect();
        handles.push(std::thread::spawn(move || {
            let (tx, _rx) = mpsc::channel();
            let r = pool.build(&targets, &BuildOptions::default(), tx, CancelToken::new());
            (targets, r)
        }));
    }
    for h in handles {
        let (targets, r) = h.join().expect("thread");
        let r = r.expect("build");
        for tg in targets {
            let outs = &r[&tg.drv];
            assert!(t.store.is_valid_path(&outs["out"]).expect("valid"));
        }
    }
    let stats = pool.stats();
    let n: usize = graph.iter().map(Vec::len).sum();
    assert_eq!(stats.per_drv.len(), n, "every derivation built");
    assert!(
        stats.per_drv.values().all(|c| *c == 1),
        "each built once: {:?}",
        stats.per_drv
    );
    assert_eq!(stats.builds as usize, n);
}

#[test]
fn max_jobs_bounds_parallelism_and_progress_is_reported() {
    let t = test_store();
    // Four independent slow builds with max_jobs = 2: two rounds.
    let drvs: Vec<StorePath> = (0..4)
        .map(|i| {
            mk_drv(
                &t.store,
                &format!("par-{i}"),
                "/bin/sh",
                &format!("/bin/sleep 0.5; echo {i} > $out"),
                &[],
                &[],
            )
        })
        .collect();
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let start = Instant::now();
    let (r, events) = build(
        &pool,
        &drvs.iter().cloned().map(all_outputs).collect::<Vec<_>>(),
        &BuildOptions::default(),
    );
    r.expect("build");
    let el = start.elapsed();
    assert!(
        el >= Duration::from_millis(1000),
        "max_jobs = 2 runs at most two at once ({el:?})"
    );
    let max_running = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Progress { running, .. } => Some(*running),
            _ => None,
        })
        .max()
        .expect("progress events");
    assert!(max_running <= 2);
    assert!(
        matches!(
            events.last(),
            Some(BuildEvent::Progress {
                done: 4,
                running: 0,
                remaining: 0
            })
        ),
        "{:?}",
        events.last()
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, BuildEvent::Started { .. }))
        .count();
    assert_eq!(started, 4);
}

#[test]
fn a_request_max_jobs_bounds_its_own_builds_within_the_pool() {
    let t = test_store();
    // Three independent slow builds, a pool of 2, a request bounded to 1: one at a time.
    let drvs: Vec<StorePath> = (0..3)
        .map(|i| {
            mk_drv(
                &t.store,
                &format!("req-j-{i}"),
                "/bin/sh",
                &format!("/bin/sleep 0.3; echo {i} > $out"),
                &[],
                &[],
            )
        })
        .collect();
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let start = Instant::now();
    let opts = BuildOptions {
        max_jobs: Some(1),
        ..BuildOptions::default()
    };
    let (r, events) = build(
        &pool,
        &drvs.iter().cloned().map(all_outputs).collect::<Vec<_>>(),
        &opts,
    );
    r.expect("build");
    let el = start.elapsed();
    assert!(el >= Duration::from_millis(900), "one at a time ({el:?})");
    // Never two started without one finished in between.
    let mut running = 0i32;
    for e in &events {
        match e {
            BuildEvent::Started { .. } => {
                running += 1;
                assert!(running <= 1, "{events:?}");
            }
            BuildEvent::Finished { .. } | BuildEvent::Failed { .. } => running -= 1,
            _ => {}
        }
    }
}

#[test]
fn plan_lists_what_must_be_built_and_report_says_how_each_job_ended() {
    let t = test_store();
    let a = mk_drv(&t.store, "plan-a", "/bin/sh", "echo a > $out", &[], &[]);
    let b = mk_drv(&t.store, "plan-b", "/bin/sh", "exit 4", &[], &[&a]);
    let c = mk_drv(&t.store, "plan-c", "/bin/sh", "echo c > $out", &[], &[]);
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let targets = vec![all_outputs(b.clone()), all_outputs(c.clone())];
    let plan = pool.plan(&targets).expect("plan");
    assert_eq!(plan.order.len(), 3);
    let pos = |p: &StorePath| plan.order.iter().position(|x| x == p).expect("listed");
    assert!(pos(&a) < pos(&b), "inputs first: {:?}", plan.order);
    assert_eq!(plan.deps[&b], BTreeSet::from([a.clone()]));
    assert_eq!(plan.tops, BTreeSet::from([b.clone(), c.clone()]));
    // Planning builds nothing.
    assert_eq!(pool.stats().builds, 0);

    let (tx, _rx) = mpsc::channel();
    let opts = BuildOptions {
        keep_going: true,
        ..BuildOptions::default()
    };
    let report = pool
        .build_report(&targets, &opts, tx, CancelToken::new())
        .expect("the request starts");
    assert!(!report.cancelled);
    assert_eq!(report.succeeded, BTreeSet::from([a.clone(), c.clone()]));
    assert_eq!(report.failed.len(), 1);
    assert!(
        matches!(&report.failed[&b], BuildError::BuilderFailed { status, .. } if status == "failed with exit code 4"),
        "{:?}",
        report.failed
    );
    // Now only b is left to build.
    let plan = pool.plan(&targets).expect("plan");
    assert_eq!(plan.order, vec![b.clone()]);
}

#[test]
fn failures_propagate_and_keep_going_builds_the_rest() {
    let t = test_store();
    let bad = mk_drv(&t.store, "bad", "/bin/sh", "exit 1", &[], &[]);
    let dependent = mk_drv(
        &t.store,
        "dependent",
        "/bin/sh",
        "echo x > $out",
        &[],
        &[&bad],
    );
    let good = mk_drv(
        &t.store,
        "good",
        "/bin/sh",
        "/bin/sleep 0.3; echo ok > $out",
        &[],
        &[],
    );
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let targets = [all_outputs(dependent.clone()), all_outputs(good.clone())];
    let (r, _) = build(
        &pool,
        &targets,
        &BuildOptions {
            keep_going: true,
            ..BuildOptions::default()
        },
    );
    let printed_bad = t.store.store_dir().print(&bad);
    let printed_dep = t.store.store_dir().print(&dependent);
    match r.expect_err("fails") {
        BuildError::Multiple(v) => {
            assert!(
                matches!(&v[0], BuildError::BuilderFailed { drv, .. } if *drv == printed_bad),
                "{v:?}"
            );
            assert_eq!(
                v[1],
                BuildError::DependencyFailed {
                    drv: printed_dep.clone(),
                    count: 1
                }
            );
            assert_eq!(
                v[1].to_string(),
                format!("1 dependencies of derivation '{printed_dep}' failed to build")
            );
        }
        e => panic!("expected two errors, got {e:?}"),
    }
    assert!(
        t.store
            .is_valid_path(&out_path(&t.store, &good))
            .expect("query"),
        "keep-going built the independent derivation"
    );
    assert_eq!(
        pool.stats().per_drv.get(&dependent),
        None,
        "the dependent never started"
    );
}

#[test]
fn cancelling_the_only_requester_kills_the_build() {
    let t = test_store();
    let slow = mk_drv(
        &t.store,
        "cancel-me",
        "/bin/sh",
        "/bin/sleep 987655; echo x > $out",
        &[],
        &[],
    );
    let after = mk_drv(
        &t.store,
        "after-cancel",
        "/bin/sh",
        "echo y > $out",
        &[],
        &[&slow],
    );
    let pool = Arc::new(BuildPool::new(t.store.clone(), settings(&t)));
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let p2 = pool.clone();
    let tg = all_outputs(after.clone());
    let h = std::thread::spawn(move || {
        let (tx, _rx) = mpsc::channel();
        p2.build(&[tg], &BuildOptions::default(), tx, c2)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process_running("987655") {
        assert!(Instant::now() < deadline, "builder never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    cancel.cancel();
    let r = h.join().expect("thread");
    assert!(matches!(r, Err(BuildError::Cancelled(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_running("987655") {
        assert!(Instant::now() < deadline, "cancelled builder still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !t.store
            .is_valid_path(&out_path(&t.store, &slow))
            .expect("query")
    );
    // The pool is still usable, and the dependent never ran.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.stats().per_drv.get(&after), None);
    let quick = mk_drv(&t.store, "after-all", "/bin/sh", "echo z > $out", &[], &[]);
    let (r, _) = build(&pool, &[all_outputs(quick)], &BuildOptions::default());
    r.expect("pool still works");
}

#[test]
fn a_build_wanted_by_two_requesters_survives_one_cancelling() {
    let t = test_store();
    let slow = mk_drv(
        &t.store,
        "shared",
        "/bin/sh",
        "/bin/sleep 1; echo shared > $out",
        &[],
        &[],
    );
    let pool = Arc::new(BuildPool::new(t.store.clone(), settings(&t)));
    let c1 = CancelToken::new();
    let spawn = |c: CancelToken| {
        let p = pool.clone();
        let tg = all_outputs(slow.clone());
        std::thread::spawn(move || {
            let (tx, _rx) = mpsc::channel();
            p.build(&[tg], &BuildOptions::default(), tx, c)
        })
    };
    let h1 = spawn(c1.clone());
    let h2 = spawn(CancelToken::new());
    std::thread::sleep(Duration::from_millis(300));
    c1.cancel();
    assert!(matches!(
        h1.join().expect("t1"),
        Err(BuildError::Cancelled(_))
    ));
    let r2 = h2
        .join()
        .expect("t2")
        .expect("second requester still gets the build");
    assert_eq!(read_out(&t.store, &slow), "shared\n");
    assert_eq!(r2[&slow]["out"], out_path(&t.store, &slow));
    assert_eq!(pool.stats().per_drv[&slow], 1);
}

#[test]
fn requested_outputs_subset_and_unknown_output() {
    let t = test_store();
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let d = mk_drv(&t.store, "single", "/bin/sh", "echo s > $out", &[], &[]);
    let (r, _) = build(
        &pool,
        &[DerivedPath {
            drv: d.clone(),
            outputs: BTreeSet::from(["dev".to_owned()]),
        }],
        &BuildOptions::default(),
    );
    let printed = t.store.store_dir().print(&d);
    assert_eq!(
        r.expect_err("no such output").to_string(),
        format!("derivation '{printed}' does not have wanted outputs 'dev'")
    );
}
