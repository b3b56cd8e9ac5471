//! A walk through ferry's local object API: create a bucket, write, read,
//! list, overwrite, delete, and reopen. Run with
//! `cargo run -p ferry --example tour`.
#![allow(clippy::print_stdout)]

use ferry::{Body, Bucket, BucketConfig, ListOptions, PutOptions};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> ferry::Result<()> {
    let scratch = std::env::temp_dir().join(format!("ferry-tour-{}", std::process::id()));
    let dir = scratch.join(".ferry");
    println!("1. creating a bucket in {}", dir.display());
    let bucket = Bucket::create(&dir, BucketConfig::default()).await?;

    println!("2. writing three objects (each put returns once it is durable)");
    let mut opts = PutOptions::default();
    opts.metadata.insert("Author".into(), "ann".into());
    bucket.put("notes/today.txt", "buy milk", opts).await?;
    bucket
        .put("notes/tomorrow.md", "# plan\n", PutOptions::default())
        .await?;
    let big = vec![42u8; 5 << 20];
    bucket
        .put(
            "media/blob.bin",
            Body::from_reader(std::io::Cursor::new(big)),
            PutOptions::default(),
        )
        .await?;

    println!("3. listing with a `/` delimiter, like folders:");
    let page = bucket.list(ListOptions::prefix("").delimiter('/')).await?;
    for p in &page.common_prefixes {
        println!("     {p}");
    }
    for meta in bucket.list_all("notes/").await? {
        println!(
            "     {:<20} {:>4} B  {:<14} {}  state={}  meta={:?}",
            meta.key,
            meta.size,
            meta.content_type,
            &meta.hash.to_hex()[..12],
            meta.state,
            meta.metadata
        );
    }

    println!("4. streaming a 5 MiB object back (verified against its BLAKE3 hash as it streams)");
    let mut object = bucket.get("media/blob.bin").await?;
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = object
            .body
            .read(&mut buf)
            .await
            .map_err(ferry::Error::from_body_io)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    println!("     read {total} bytes");

    println!("5. bad keys are refused with the rule they broke:");
    for key in ["../escape", "/abs", ".ferry/x", ""] {
        if let Err(e) = bucket.put(key, "x", PutOptions::default()).await {
            println!("     {e}");
        }
    }

    println!("6. overwrite, delete, and reopen");
    bucket
        .put("notes/today.txt", "buy oat milk", PutOptions::default())
        .await?;
    bucket.delete("notes/tomorrow.md").await?;
    drop(bucket);
    let bucket = Bucket::open(&dir).await?;
    let (_, today) = bucket.get_bytes("notes/today.txt").await?;
    println!(
        "     notes/today.txt = {:?}",
        String::from_utf8_lossy(&today)
    );
    println!(
        "     notes/tomorrow.md exists: {}",
        bucket.exists("notes/tomorrow.md").await?
    );
    drop(bucket);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("done.");
    Ok(())
}
