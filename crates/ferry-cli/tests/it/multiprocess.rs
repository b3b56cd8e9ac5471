//! Several processes writing one bucket at once.

use std::process::Command;

use crate::support::{torture, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_each_put_1000_and_all_are_present() {
    let s = Scratch::new();
    let bucket = s.bucket();
    let children: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|p| {
            Command::new(torture())
                .args(["put-many", bucket.to_str().unwrap(), p, "1000"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a writer process failed: {status}");
    }
    let b = ferry::Bucket::open(&bucket).await.unwrap();
    for p in ["p1", "p2"] {
        let listed = b.list_all(&format!("{p}/")).await.unwrap();
        assert_eq!(listed.len(), 1000, "{p} lost writes");
        for i in [0, 1, 499, 999] {
            let (_, data) = b.get_bytes(&format!("{p}/{i}")).await.unwrap();
            assert_eq!(&data[..], format!("{p}:{i}").as_bytes());
        }
    }
}
