//! `ferry-torture`: a test driver, not a user command. The CLI's integration
//! tests run it as a child process to write one bucket from several processes
//! and to be killed with SIGKILL at random moments.
//!
//! - `ferry-torture put-many DIR PREFIX N`: N puts of `PREFIX/i`.
//! - `ferry-torture crash DIR SEED`: random puts and deletes forever, printing
//!   `BEGIN id op key hash` before each and `ACK id` once it is durable.

use std::io::Write;
use std::process::ExitCode;

use ferry::{Bucket, ContentHash, PutOptions};
use rand::{Rng, SeedableRng};

/// Keys per crash task; each task owns its keys, so at most one op per key is in flight.
const KEYS_PER_TASK: usize = 5;
const TASKS: usize = 4;

/// Deterministic content for a put: small (inline) or large (blob file).
pub fn content(seed: u64, id: u64, large: bool) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ id);
    let len = if large {
        rng.random_range(70_000..400_000)
    } else {
        rng.random_range(0..6_000)
    };
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.get(1).map(String::as_str) {
            Some("put-many") if args.len() == 5 => {
                let n: usize = args[4].parse()?;
                put_many(&args[2], &args[3], n).await
            }
            Some("crash") if args.len() == 4 => crash(&args[2], args[3].parse()?).await,
            _ => anyhow::bail!("usage: ferry-torture put-many DIR PREFIX N | crash DIR SEED"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-torture: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn put_many(dir: &str, prefix: &str, n: usize) -> anyhow::Result<()> {
    let bucket = Bucket::open(dir).await?;
    for i in 0..n {
        bucket
            .put(
                &format!("{prefix}/{i}"),
                format!("{prefix}:{i}"),
                PutOptions::default(),
            )
            .await?;
    }
    Ok(())
}

async fn crash(dir: &str, seed: u64) -> anyhow::Result<()> {
    let bucket = Bucket::open(dir).await?;
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = move |line: String| {
        if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    };
    say("READY".into());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let bucket = bucket.clone();
        let say = say.clone();
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 31 + task as u64);
            for n in 0u64.. {
                let id = seed * 1_000_000 + task as u64 * 100_000 + n;
                let key = format!("t{task}/k{}", rng.random_range(0..KEYS_PER_TASK));
                if rng.random_bool(0.3) {
                    say(format!("BEGIN {id} del {key} -"));
                    bucket.delete(&key).await?;
                } else {
                    let data = content(seed, id, rng.random_bool(0.4));
                    say(format!("BEGIN {id} put {key} {}", ContentHash::of(&data)));
                    bucket.put(&key, data, PutOptions::default()).await?;
                }
                say(format!("ACK {id}"));
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
