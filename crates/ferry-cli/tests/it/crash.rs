//! SIGKILL a writer at random moments, 200 times, and check after each kill
//! that every acknowledged write survived, nothing is torn, the index is
//! sound and no unreferenced blob outlives the next open.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::support::{blob_files, referenced_blobs, torture, Scratch};

/// What a key may hold: `None` means absent, `Some(hash)` that content.
type Value = Option<String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_puts_and_deletes_loses_no_acknowledged_write() {
    let s = Scratch::new();
    let dir = s.bucket();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xfe77);
    // The value each key is known to hold (after the last check).
    let mut known: HashMap<String, Value> = HashMap::new();
    let mut acked_total = 0;
    let mut torn_candidates = 0;
    for round in 0..200u64 {
        let mut child = Command::new(torture())
            .args(["crash", dir.to_str().unwrap(), &round.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(1..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        // Replay the child's log: acknowledged ops set the value; an op that
        // began but was not acknowledged may or may not have happened.
        let mut begun: HashMap<String, (String, Value)> = HashMap::new();
        let mut maybe: HashMap<String, Vec<Value>> = HashMap::new();
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["BEGIN", id, op, key, hash] => {
                    let v = if *op == "put" {
                        Some(hash.to_string())
                    } else {
                        None
                    };
                    begun.insert(id.to_string(), (key.to_string(), v));
                }
                ["ACK", id] => {
                    let (key, v) = begun.remove(*id).expect("ACK without BEGIN");
                    known.insert(key, v);
                    acked_total += 1;
                }
                ["READY"] => {}
                [] | [""] => {}
                other => panic!("unexpected line from the child: {other:?}"),
            }
        }
        for (_, (key, v)) in begun {
            maybe.entry(key).or_default().push(v);
            torn_candidates += 1;
        }

        let bucket = ferry::Bucket::open(&dir).await.unwrap();
        let keys: Vec<String> = known.keys().chain(maybe.keys()).cloned().collect();
        for key in keys {
            let actual: Value = match bucket.get_bytes(&key).await {
                Ok((meta, data)) => {
                    assert_eq!(
                        ferry::ContentHash::of(&data),
                        meta.hash,
                        "{key}: bytes do not match hash"
                    );
                    Some(meta.hash.to_hex())
                }
                Err(ferry::Error::NotFound { .. }) => None,
                Err(e) => panic!("round {round}: reading {key} failed: {e}"),
            };
            let expected = known.get(&key).cloned().unwrap_or(None);
            let allowed = maybe.get(&key).is_some_and(|vs| vs.contains(&actual));
            assert!(
                actual == expected || allowed,
                "round {round}: {key} holds {actual:?}, expected {expected:?} or one of {:?}",
                maybe.get(&key)
            );
            known.insert(key, actual);
        }
        drop(bucket);

        let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}: index integrity");
        assert_eq!(
            blob_files(&dir),
            referenced_blobs(&conn),
            "round {round}: blob files vs index"
        );
        let temps = std::fs::read_dir(dir.join("tmp")).unwrap().count();
        assert_eq!(temps, 0, "round {round}: temp files survived the open");
    }
    // The test must actually have exercised writes and interrupted ones.
    assert!(acked_total > 1000, "only {acked_total} acknowledged writes");
    assert!(
        torn_candidates > 50,
        "only {torn_candidates} interrupted writes"
    );
}
