//! Loading every supported source: the Debian Fashion-MNIST package and fortunes (skipped with a
//! message when absent), torchvision-style IDX folders, CIFAR binaries, image folders.

mod common;

use std::path::Path;

use common::{write_idx_pair, TempDir};
use selfsup_data::cifar::{load_cifar10, load_cifar100, Cifar100Label};
use selfsup_data::folder::{load_image_folder, ColorMode, FolderLayout, FolderOptions};
use selfsup_data::idx::{load_fashion_mnist, load_mnist, DEBIAN_FASHION_MNIST_DIR};
use selfsup_data::subset::per_class_subset;
use selfsup_data::text::{fortunes_corpus, DEBIAN_FORTUNES_DIR};
use selfsup_data::vocab::Vocab;
use selfsup_data::Split;

#[test]
fn debian_fashion_mnist_loads_with_the_right_counts() {
    let dir = Path::new(DEBIAN_FASHION_MNIST_DIR);
    if !dir.exists() {
        eprintln!(
            "SKIPPED: {DEBIAN_FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let train = load_fashion_mnist(dir, Split::Train).unwrap();
    let test = load_fashion_mnist(dir, Split::Test).unwrap();
    assert_eq!(
        (train.len, train.channels, train.height, train.width),
        (60_000, 1, 28, 28)
    );
    assert_eq!(test.len, 10_000);
    for (ds, per) in [(&train, 6000), (&test, 1000)] {
        let labels = ds.labels.as_ref().unwrap();
        for c in 0..10 {
            assert_eq!(labels.iter().filter(|&&l| l == c).count(), per);
        }
    }
    // first training image of Fashion-MNIST is an ankle boot (9), first test image too
    assert_eq!(train.labels.as_ref().unwrap()[0], 9);
    assert_eq!(test.labels.as_ref().unwrap()[0], 9);
    assert_eq!(train.class_names[9], "Ankle boot");
    let mean =
        train.pixels.iter().map(|&p| p as f64).sum::<f64>() / train.pixels.len() as f64 / 255.0;
    assert!((mean - 0.2860).abs() < 0.0005, "pixel mean {mean}");
    let few = per_class_subset(train.labels.as_ref().unwrap(), 60, 0).unwrap();
    assert_eq!(few.len(), 600);
}

#[test]
fn torchvision_folder_with_gzip_idx_files() {
    let t = TempDir::new("tv");
    let raw = t.path().join("FashionMNIST").join("raw");
    write_idx_pair(&raw, "train", 60, 28, 28, true);
    write_idx_pair(&raw, "t10k", 10, 28, 28, true);
    let train = load_fashion_mnist(t.path(), Split::Train).unwrap();
    let test = load_fashion_mnist(t.path(), Split::Test).unwrap();
    assert_eq!((train.len, test.len), (60, 10));
    assert_eq!(
        train.labels.as_ref().unwrap()[..12],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    );
    assert_eq!(train.image(3).pixels[28 + 2], (3 + 1 + 2) as u8);
    // raw (uncompressed) files in an MNIST/raw folder, labels optional
    let m = t.path().join("other");
    write_idx_pair(&m.join("MNIST").join("raw"), "t10k", 5, 4, 4, false);
    std::fs::remove_file(m.join("MNIST/raw/t10k-labels-idx1-ubyte")).unwrap();
    let unl = load_mnist(&m, Split::Test, false).unwrap();
    assert_eq!((unl.len, unl.labels), (5, None));
    assert!(load_mnist(&m, Split::Test, true).is_err());
}

#[test]
fn cifar_binaries_written_by_the_test() {
    let t = TempDir::new("cifar");
    let d10 = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d10).unwrap();
    let rec = |label: u8, fill: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| if i < 1024 { fill } else { (i / 1024) as u8 }));
        r
    };
    for b in 1..=5 {
        let data: Vec<u8> = (0..3u8).flat_map(|i| rec(i + b, 10 * b)).collect();
        std::fs::write(d10.join(format!("data_batch_{b}.bin")), data).unwrap();
    }
    std::fs::write(d10.join("test_batch.bin"), rec(7, 1)).unwrap();
    let tr = load_cifar10(t.path(), Split::Train).unwrap();
    assert_eq!((tr.len, tr.channels, tr.height, tr.width), (15, 3, 32, 32));
    assert_eq!(tr.labels.as_ref().unwrap()[..4], [1, 2, 3, 2]);
    let img = tr.image(0).pixels;
    assert_eq!((img[0], img[1024], img[2048]), (10, 1, 2));
    assert_eq!(
        load_cifar10(&d10, Split::Test).unwrap().labels,
        Some(vec![7])
    );
    let d100 = t.path().join("cifar-100-binary");
    std::fs::create_dir_all(&d100).unwrap();
    let mut r = vec![3u8, 42];
    r.extend(vec![0u8; 3072]);
    std::fs::write(d100.join("train.bin"), [r.clone(), r].concat()).unwrap();
    assert_eq!(
        load_cifar100(t.path(), Split::Train, Cifar100Label::Fine)
            .unwrap()
            .labels,
        Some(vec![42, 42])
    );
    assert_eq!(
        load_cifar100(t.path(), Split::Train, Cifar100Label::Coarse)
            .unwrap()
            .labels,
        Some(vec![3, 3])
    );
}

#[test]
fn image_folders_labelled_and_flat() {
    let t = TempDir::new("folder");
    let root = t.path().join("classes");
    for (c, name) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..2 {
            let img = image::RgbImage::from_fn(8, 6, |x, y| {
                image::Rgb([(x * 30) as u8, (y * 40) as u8, (c * 200) as u8])
            });
            let ext = if i == 0 { "png" } else { "jpg" };
            img.save(root.join(name).join(format!("{i}.{ext}")))
                .unwrap();
        }
    }
    std::fs::write(root.join("cat").join("notes.txt"), "not an image").unwrap();
    let opts = FolderOptions {
        size: (6, 8),
        color: ColorMode::Rgb,
        layout: FolderLayout::Auto,
    };
    let ds = load_image_folder(&root, opts).unwrap();
    assert_eq!((ds.len, ds.channels, ds.height, ds.width), (4, 3, 6, 8));
    assert_eq!(ds.labels, Some(vec![0, 0, 1, 1]));
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    let png = ds.image(0).pixels; // lossless: exact values, CHW
    assert_eq!((png[3], png[48 + 8 * 2], png[96]), (90, 80, 0));
    assert_eq!(ds.image(2).pixels[96], 200);
    // flat, grayscale, resized
    let flat = root.join("dog");
    let g = load_image_folder(
        &flat,
        FolderOptions {
            size: (3, 4),
            color: ColorMode::Gray,
            layout: FolderLayout::Auto,
        },
    )
    .unwrap();
    assert_eq!(
        (g.len, g.channels, g.height, g.width, g.labels.is_none()),
        (2, 1, 3, 4, true)
    );
}

#[test]
fn fortunes_corpus_matches_the_readme() {
    let dir = Path::new(DEBIAN_FORTUNES_DIR);
    if !dir.exists() {
        eprintln!("SKIPPED: {DEBIAN_FORTUNES_DIR} absent (apt-get install fortunes)");
        return;
    }
    let c = fortunes_corpus(dir).unwrap();
    assert_eq!(c.text.chars().count(), 2_561_397);
    assert_eq!(c.validation.chars().count(), 261_150);
    let v = Vocab::chars_from_text(vec![], &c.text);
    assert_eq!(v.len(), 113);
    assert_eq!(c.entries.len(), 15_217);
    assert!(v.encode(&c.train).is_ok());
}

#[test]
fn image_batch_converts_to_a_tensor() {
    let b = selfsup_data::ImageBatch {
        data: (0..24).map(|v| v as f32).collect(),
        shape: [2, 1, 3, 4],
    };
    let t = b.into_tensor().unwrap();
    assert_eq!(t.shape(), &[2, 1, 3, 4]);
    assert_eq!(t.to_vec::<f32>().unwrap()[23], 23.0);
}
