//! Loads Fashion-MNIST (Debian package folder, or the folder given as the first argument), builds
//! the benchmark's SimCLR two-view loader and prints one epoch's batch count, shapes and timing.
//!
//! Run: `cargo run --release -p selfsup-data --example fashion_mnist_views [-- <folder>]`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use selfsup_data::idx::{load_fashion_mnist, DEBIAN_FASHION_MNIST_DIR};
use selfsup_data::subset::per_class_subset;
use selfsup_data::{Loader, LoaderConfig, Split, ViewConfig, Views};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| DEBIAN_FASHION_MNIST_DIR.into());
    if let Err(e) = run(dir) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(dir: PathBuf) -> selfsup_data::Result<()> {
    let t = Instant::now();
    let train = load_fashion_mnist(&dir, Split::Train)?;
    let test = load_fashion_mnist(&dir, Split::Test)?;
    println!(
        "loaded {} train / {} test images in {:.2} s",
        train.len,
        test.len,
        t.elapsed().as_secs_f64()
    );
    if let Some(labels) = &train.labels {
        println!(
            "600-label subset: {} indices",
            per_class_subset(labels, 60, 0)?.len()
        );
    }
    let loader = Loader::new(
        Arc::new(train),
        Views::two(ViewConfig::default()),
        LoaderConfig::default(),
    )?;
    let t = Instant::now();
    let mut images = 0;
    for (i, batch) in loader.epoch(0).enumerate() {
        if i == 0 {
            let v = &batch.views[0];
            let mean = v.data.iter().sum::<f32>() / v.data.len() as f32;
            println!(
                "batch 0: views {:?} + {:?}, first labels {:?}, view mean {mean:.3}",
                v.shape,
                batch.views[1].shape,
                &batch.labels.as_deref().unwrap_or(&[])[..8]
            );
        }
        images += batch.indices.len();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "epoch 0: {} batches, {images} images x 2 views in {s:.2} s ({:.0} images/s)",
        loader.batches_per_epoch(),
        images as f64 / s
    );
    Ok(())
}
