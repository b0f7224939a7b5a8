//! Image folders (PNG / JPEG): one subfolder per class (labelled, labels = index of the sorted
//! subfolder names) or a flat folder of images (unlabelled). Every image is decoded, converted to
//! grayscale or RGB, and resized (bilinear) to the configured size when loaded.

use std::path::{Path, PathBuf};

use crate::augment::resize::resize_u8;
use crate::dataset::ImageDataset;
use crate::error::{list_dir, read_file, DataError, Result};

/// Colour mode of the loaded images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// 1 channel (luma).
    Gray,
    /// 3 channels.
    Rgb,
}

/// How the folder is organised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderLayout {
    /// Subfolders are classes; images directly inside the root are an error.
    ClassPerSubfolder,
    /// All images directly in the root, unlabelled; subfolders are ignored.
    Flat,
    /// Class-per-subfolder if the root has subfolders, else flat.
    Auto,
}

/// Image-folder loading options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Grayscale or RGB.
    pub color: ColorMode,
    /// Folder layout.
    pub layout: FolderLayout,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
            .unwrap_or(false)
}

fn is_visible_dir(p: &Path) -> bool {
    p.is_dir()
        && !p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}

/// Decodes one image file and converts it to CHW `u8` at `size`.
pub fn load_image(path: &Path, size: (usize, usize), color: ColorMode) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        details: format!("{e}; the file is corrupt or not a supported format (PNG, JPEG): re-export or remove it"),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let chw: Vec<u8> = match color {
        ColorMode::Gray => img.to_luma8().into_raw(),
        ColorMode::Rgb => {
            let hwc = img.to_rgb8().into_raw();
            let plane = w * h;
            let mut chw = vec![0u8; 3 * plane];
            for (i, px) in hwc.chunks_exact(3).enumerate() {
                chw[i] = px[0];
                chw[plane + i] = px[1];
                chw[2 * plane + i] = px[2];
            }
            chw
        }
    };
    let c = if color == ColorMode::Gray { 1 } else { 3 };
    if (h, w) == size {
        Ok(chw)
    } else {
        Ok(resize_u8(&chw, c, h, w, size.0, size.1))
    }
}

/// Loads an image folder into memory.
pub fn load_image_folder(root: &Path, opts: FolderOptions) -> Result<ImageDataset> {
    if opts.size.0 == 0 || opts.size.1 == 0 {
        return Err(DataError::invalid(
            "image size",
            format!("{:?}; use a positive size", opts.size),
        ));
    }
    if !root.is_dir() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
            hint: "no such folder; pass a folder of PNG/JPEG images or of class subfolders".into(),
        });
    }
    let entries = list_dir(root)?;
    let subdirs: Vec<PathBuf> = entries
        .iter()
        .filter(|p| is_visible_dir(p))
        .cloned()
        .collect();
    let labelled = match opts.layout {
        FolderLayout::ClassPerSubfolder => true,
        FolderLayout::Flat => false,
        FolderLayout::Auto => !subdirs.is_empty(),
    };
    let mut files: Vec<(PathBuf, Option<i64>)> = Vec::new();
    let mut class_names = Vec::new();
    if labelled {
        for (c, dir) in subdirs.iter().enumerate() {
            let imgs: Vec<PathBuf> = list_dir(dir)?.into_iter().filter(|p| is_image(p)).collect();
            if imgs.is_empty() {
                return Err(DataError::Empty {
                    path: dir.clone(),
                    details:
                        "class folder without PNG/JPEG images; add images or remove the folder"
                            .into(),
                });
            }
            class_names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            files.extend(imgs.into_iter().map(|p| (p, Some(c as i64))));
        }
    } else {
        files.extend(
            entries
                .into_iter()
                .filter(|p| is_image(p))
                .map(|p| (p, None)),
        );
    }
    if files.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            details: if labelled {
                "no class subfolders; put images in one subfolder per class".into()
            } else {
                "no .png/.jpg/.jpeg files; put images in the folder (or one subfolder per class)"
                    .into()
            },
        });
    }
    let c = if opts.color == ColorMode::Gray { 1 } else { 3 };
    let per = c * opts.size.0 * opts.size.1;
    let mut pixels = Vec::with_capacity(files.len() * per);
    let mut labels = Vec::with_capacity(files.len());
    for (p, l) in &files {
        pixels.extend_from_slice(&load_image(p, opts.size, opts.color)?);
        labels.extend(*l);
    }
    let labels = if labelled { Some(labels) } else { None };
    ImageDataset::new(
        pixels,
        [files.len(), c, opts.size.0, opts.size.1],
        labels,
        class_names,
    )
}
