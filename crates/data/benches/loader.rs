//! Loader throughput: two augmented 28x28 views per image (random resized crop, scale 0.5-1,
//! flip, normalise), batches of 256, as in the benchmark's SimCLR step. Uses Fashion-MNIST from
//! the Debian package when installed, else synthetic images of the same shape.
//!
//! Run: `cargo bench -p selfsup-data --bench loader`

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfsup_data::idx::load_fashion_mnist_debian;
use selfsup_data::loader::{Loader, LoaderConfig};
use selfsup_data::{ImageDataset, Split, ViewConfig, Views};

const N: usize = 20_480;

fn dataset() -> Arc<ImageDataset> {
    let ds = match load_fashion_mnist_debian(Split::Train) {
        Ok(ds) => {
            println!("using Fashion-MNIST from the Debian package (first {N} images)");
            ds.select(&(0..N).collect::<Vec<_>>())
                .expect("subset of a loaded dataset")
        }
        Err(e) => {
            println!("Fashion-MNIST not available ({e}); using synthetic 28x28 images");
            let pixels = (0..N * 784)
                .map(|i| ((i * 2_654_435_761usize) >> 7) as u8)
                .collect();
            ImageDataset::new(pixels, [N, 1, 28, 28], Some(vec![0; N]), vec![])
                .expect("valid shape")
        }
    };
    Arc::new(ds)
}

fn bench(c: &mut Criterion) {
    let ds = dataset();
    let loader = Loader::new(
        ds,
        Views::two(ViewConfig::default()),
        LoaderConfig::default(),
    )
    .expect("loader");
    let per_epoch = loader.batches_per_epoch() * loader.config().batch_size;
    // A plain timing first, printed as images/s (each image yields two views).
    for epoch in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(epoch) {
            n += b.indices.len();
            std::hint::black_box(&b);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "loader epoch {epoch}: {n} images (x2 views) in {s:.3} s = {:.0} images/s",
            n as f64 / s
        );
    }
    let mut g = c.benchmark_group("loader");
    g.sample_size(10);
    g.throughput(Throughput::Elements(per_epoch as u64));
    let mut epoch = 100;
    g.bench_function("two_views_28x28_crop_flip_normalise", |b| {
        b.iter(|| {
            epoch += 1;
            loader.epoch(epoch).map(|b| b.indices.len()).sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
