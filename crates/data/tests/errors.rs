//! Bad input of every kind gives one clear one-line error naming the file, the problem and the
//! fix; never a panic, never a partial load.

mod common;

use std::path::Path;

use common::{gzip, write_idx_pair, TempDir};
use selfsup_data::cifar::load_cifar10;
use selfsup_data::folder::{load_image_folder, ColorMode, FolderLayout, FolderOptions};
use selfsup_data::idx::{encode_idx_u8, load_fashion_mnist, load_idx_images, read_idx};
use selfsup_data::text::{read_text, read_texts};
use selfsup_data::vocab::Vocab;
use selfsup_data::{DataError, Split};

/// Checks the message is one line and contains every fragment.
fn check(e: DataError, fragments: &[&str]) {
    let m = e.to_string();
    eprintln!("{m}");
    assert!(!m.contains('\n'), "multi-line message: {m}");
    for f in fragments {
        assert!(m.contains(f), "message {m:?} lacks {f:?}");
    }
}

#[test]
fn idx_errors() {
    let t = TempDir::new("idx-err");
    let p = |n: &str| t.path().join(n);
    let ps = |n: &str| p(n).display().to_string();

    // missing file / folder
    check(
        read_idx(&p("nope.gz")).unwrap_err(),
        &[&ps("nope.gz"), "not found"],
    );
    check(
        load_fashion_mnist(&p("nowhere"), Split::Train).unwrap_err(),
        &[&ps("nowhere"), "apt-get install"],
    );
    std::fs::create_dir_all(p("emptydir")).unwrap();
    check(
        load_fashion_mnist(&p("emptydir"), Split::Test).unwrap_err(),
        &["t10k-images-idx3-ubyte", "not found"],
    );

    // wrong magic number (an HTML page saved as .gz-less IDX)
    std::fs::write(p("html"), b"<html>404</html>").unwrap();
    check(
        read_idx(&p("html")).unwrap_err(),
        &[&ps("html"), "bad magic number 3c 68 74 6d", "replace it"],
    );

    // truncated raw and gzip files
    let full = encode_idx_u8(&[10, 28, 28], &[7u8; 7840]);
    std::fs::write(p("trunc"), &full[..5000]).unwrap();
    check(
        read_idx(&p("trunc")).unwrap_err(),
        &[&ps("trunc"), "truncated", "7840", "fetch it again"],
    );
    let gz = gzip(&full);
    std::fs::write(p("trunc.gz"), &gz[..gz.len() / 2]).unwrap();
    check(
        read_idx(&p("trunc.gz")).unwrap_err(),
        &[&ps("trunc.gz"), "truncated", "gzip"],
    );
    std::fs::write(
        p("garbage.gz"),
        [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    )
    .unwrap();
    check(
        read_idx(&p("garbage.gz")).unwrap_err(),
        &[&ps("garbage.gz"), "gzip"],
    );

    // count mismatch between images and labels
    write_idx_pair(&p("mm"), "train", 12, 4, 4, true);
    std::fs::write(
        p("mm/train-labels-idx1-ubyte.gz"),
        gzip(&encode_idx_u8(&[11], &[0; 11])),
    )
    .unwrap();
    let e = load_idx_images(
        &p("mm/train-images-idx3-ubyte.gz"),
        Some(&p("mm/train-labels-idx1-ubyte.gz")),
    )
    .unwrap_err();
    check(
        e,
        &[
            "12 images",
            "11 labels",
            "train-labels-idx1-ubyte.gz",
            "matching files",
        ],
    );

    // labels file passed as images
    let e = load_idx_images(&p("mm/train-labels-idx1-ubyte.gz"), None).unwrap_err();
    check(e, &["3-d u8", "1-d"]);
}

#[test]
fn cifar_errors() {
    let t = TempDir::new("cifar-err");
    check(
        load_cifar10(t.path(), Split::Test).unwrap_err(),
        &["test_batch.bin", "not found"],
    );
    std::fs::write(t.path().join("test_batch.bin"), vec![0u8; 3073 * 2 + 100]).unwrap();
    check(
        load_cifar10(t.path(), Split::Test).unwrap_err(),
        &["test_batch.bin", "truncated", "2 full records"],
    );
    let mut bad = vec![42u8];
    bad.extend(vec![0u8; 3072]);
    std::fs::write(t.path().join("test_batch.bin"), bad).unwrap();
    check(
        load_cifar10(t.path(), Split::Test).unwrap_err(),
        &["label 42", "10 classes"],
    );
}

#[test]
fn folder_errors() {
    let t = TempDir::new("folder-err");
    let opts = FolderOptions {
        size: (4, 4),
        color: ColorMode::Gray,
        layout: FolderLayout::Auto,
    };
    check(
        load_image_folder(&t.path().join("missing"), opts).unwrap_err(),
        &["missing", "not found"],
    );
    check(
        load_image_folder(t.path(), opts).unwrap_err(),
        &[&t.path().display().to_string(), "empty", ".png"],
    );
    std::fs::create_dir_all(t.path().join("a")).unwrap();
    check(
        load_image_folder(t.path(), opts).unwrap_err(),
        &["empty", "class folder"],
    );
    std::fs::write(
        t.path().join("a").join("broken.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    let e = load_image_folder(t.path(), opts).unwrap_err();
    check(e, &["broken.png", "cannot decode"]);
}

#[test]
fn text_errors() {
    let t = TempDir::new("text-err");
    let f = t.path().join("latin1.txt");
    std::fs::write(&f, b"line one\ncaf\xe9\n").unwrap();
    check(
        read_text(&f).unwrap_err(),
        &["latin1.txt", "not valid UTF-8 at byte 12 (line 2)", "iconv"],
    );
    check(
        read_text(Path::new("/nonexistent/x.txt")).unwrap_err(),
        &["/nonexistent/x.txt", "not found"],
    );
    std::fs::create_dir_all(t.path().join("empty")).unwrap();
    check(
        read_texts(&t.path().join("empty"), &[]).unwrap_err(),
        &["empty", "no text files"],
    );
    std::fs::write(t.path().join("v.vocab"), "selfsup-vocab 2\n").unwrap();
    check(
        Vocab::load(&t.path().join("v.vocab")).unwrap_err(),
        &["v.vocab", "bad magic"],
    );
}
