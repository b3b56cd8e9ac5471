//! ferry's main job on the embedded default: two replicas of one bucket
//! syncing through a local folder (`file://`), one conflict and its
//! resolution. No servers, no credentials. Run with
//! `cargo run -p ferry --example two_replicas`.
#![allow(clippy::print_stdout)]

use ferry::remote::spec::{Credentials, RemoteSpec};
use ferry::{Bucket, BucketConfig, PutOptions, Resolution, SyncOptions};

#[tokio::main]
async fn main() -> ferry::Result<()> {
    // Removed when the example ends (the buckets, declared later, close first).
    let scratch_dir = tempfile::Builder::new()
        .prefix("ferry-two-replicas-")
        .tempdir()
        .map_err(|source| ferry::Error::Io {
            context: "creating a scratch folder",
            path: std::env::temp_dir(),
            source,
        })?;
    let scratch = scratch_dir.path().to_owned();
    let remote = RemoteSpec::new(format!(
        "file://{}",
        scratch.join("shared-folder").display()
    ));
    println!("remote: {}", remote.url);

    let laptop = Bucket::create(scratch.join("laptop/.ferry"), BucketConfig::default()).await?;
    let desktop = Bucket::create(scratch.join("desktop/.ferry"), BucketConfig::default()).await?;
    for b in [&laptop, &desktop] {
        b.set_remote(remote.clone()).await?;
        let probe = b.connect(&Credentials::default()).await?;
        println!(
            "connected; the remote enforces conditional writes: {}",
            probe.conditional_put
        );
    }

    println!("\n1. the laptop writes two objects, offline and durable, then syncs");
    laptop
        .put(
            "notes/plan.md",
            "# plan\n- ship ferry\n",
            PutOptions::default(),
        )
        .await?;
    laptop
        .put(
            "photos/cat.jpg",
            vec![0xFFu8; 200_000],
            PutOptions::default(),
        )
        .await?;
    let r = laptop.sync(SyncOptions::default()).await?;
    println!("   laptop: pushed {}, pulled {}", r.pushed, r.pulled);

    println!("2. the desktop syncs and reads them");
    let r = desktop.sync(SyncOptions::default()).await?;
    println!("   desktop: pushed {}, pulled {}", r.pushed, r.pulled);
    let (_, plan) = desktop.get_bytes("notes/plan.md").await?;
    println!(
        "   desktop reads notes/plan.md: {:?}",
        String::from_utf8_lossy(&plan)
    );

    println!("3. both edit the same note before syncing");
    laptop
        .put(
            "notes/plan.md",
            "# plan\n- ship ferry\n- laptop idea\n",
            PutOptions::default(),
        )
        .await?;
    desktop
        .put(
            "notes/plan.md",
            "# plan\n- ship ferry\n- desktop idea\n",
            PutOptions::default(),
        )
        .await?;
    let r = laptop.sync(SyncOptions::default()).await?;
    println!("   laptop syncs first: pushed {}", r.pushed);
    let r = desktop.sync(SyncOptions::default()).await?;
    for c in &r.conflicts {
        println!(
            "   desktop: conflict on {} ({})",
            c.key,
            c.reason.map(|x| x.describe()).unwrap_or("?")
        );
    }
    let s = desktop.status().await?;
    println!(
        "   desktop status: {} object(s): {} synced, {} dirty, {} in conflict",
        s.total, s.synced, s.dirty, s.conflicts
    );

    println!("4. the desktop keeps both versions");
    let out = desktop
        .resolve("notes/plan.md", Resolution::KeepBoth)
        .await?;
    let copy = out.renamed_to.unwrap_or_default();
    println!("   its own version is now {copy}; notes/plan.md holds the laptop's");
    desktop.sync(SyncOptions::default()).await?;
    laptop.sync(SyncOptions::default()).await?;
    for meta in laptop.list_all("notes/").await? {
        let (_, data) = laptop.get_bytes(&meta.key).await?;
        println!(
            "   laptop has {:<45} {:?}",
            meta.key,
            String::from_utf8_lossy(&data)
        );
    }
    println!("\nno write was lost. (the scratch folder is removed now)");
    drop((laptop, desktop));
    Ok(())
}
