//! PNG renderer: the scan's reverse-engineered triggers as pictures a person can look at.
//!
//! Per label: the mask (white = 1), the trigger `mask * pattern` on black, and the first clean
//! input with the trigger stamped; plus `overview.png`, every label's mask and trigger side by
//! side (top row masks, bottom row triggers, a red frame around flagged labels). Images are
//! scaled up with nearest-neighbour pixels so an 8x8 mask is visible.

use crate::scan::{Layout, ScanResult, trigger};
use std::path::Path;

/// An 8-bit image, grey (1 channel) or RGB (3), row-major.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    fn blank(width: usize, height: usize, channels: usize, v: u8) -> Self {
        Image {
            width,
            height,
            channels,
            data: vec![v; width * height * channels],
        }
    }

    /// Nearest-neighbour enlargement by an integer factor.
    pub fn upscale(&self, f: usize) -> Image {
        let f = f.max(1);
        let (w, h, c) = (self.width * f, self.height * f, self.channels);
        let mut data = Vec::with_capacity(w * h * c);
        for y in 0..h {
            for x in 0..w {
                let s = ((y / f) * self.width + x / f) * c;
                data.extend_from_slice(&self.data[s..s + c]);
            }
        }
        Image {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        Image {
            width: self.width,
            height: self.height,
            channels: 3,
            data: self.data.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }

    /// Copy `src` (RGB) with its top-left corner at `(x, y)`.
    fn blit(&mut self, src: &Image, x: usize, y: usize) {
        let src = src.to_rgb();
        for r in 0..src.height {
            for q in 0..src.width {
                let (dy, dx) = (y + r, x + q);
                if dy < self.height && dx < self.width {
                    let d = (dy * self.width + dx) * 3;
                    let s = (r * src.width + q) * 3;
                    self.data[d..d + 3].copy_from_slice(&src.data[s..s + 3]);
                }
            }
        }
    }

    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3], t: usize) {
        for r in y..(y + h).min(self.height) {
            for q in x..(x + w).min(self.width) {
                if r < y + t || r + t >= y + h || q < x + t || q + t >= x + w {
                    let d = (r * self.width + q) * 3;
                    self.data[d..d + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
}

/// Write an image as an 8-bit PNG.
pub fn write(path: &Path, img: &Image) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(file),
        img.width as u32,
        img.height as u32,
    );
    enc.set_color(if img.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(&img.data)
        .map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)
}

fn byte(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Values in the input layout, mapped from `[lo, hi]` to grey or RGB (other channel counts
/// show their mean).
fn picture(layout: &Layout, values: &[f32], (lo, hi): (f64, f64)) -> Image {
    let (w, h, c) = (layout.width, layout.height, layout.channels);
    let out_c = if c == 3 { 3 } else { 1 };
    let mut img = Image::blank(w, h, out_c, 0);
    for pos in 0..w * h {
        let norm = |ch: usize| (values[layout.index(ch, pos)] as f64 - lo) / (hi - lo);
        if out_c == 3 {
            for ch in 0..3 {
                img.data[pos * 3 + ch] = byte(norm(ch));
            }
        } else {
            let m = (0..c).map(norm).sum::<f64>() / c as f64;
            img.data[pos] = byte(m);
        }
    }
    img
}

/// The mask as grey levels (white = 1).
pub fn mask_image(layout: &Layout, t: &trigger::Trigger) -> Image {
    Image {
        width: layout.width,
        height: layout.height,
        channels: 1,
        data: t.mask.iter().map(|&m| byte(m as f64)).collect(),
    }
}

/// The trigger `mask * pattern` on black (the range's low end).
pub fn trigger_image(layout: &Layout, t: &trigger::Trigger, range: (f64, f64)) -> Image {
    let (lo, _) = range;
    let v: Vec<f32> = (0..layout.numel())
        .map(|i| {
            let m = t.mask[layout.position_of(i)] as f64;
            (lo + m * (t.pattern[i] as f64 - lo)) as f32
        })
        .collect();
    picture(layout, &v, range)
}

/// Enlargement that makes the longer side at least 128 pixels.
fn factor(layout: &Layout) -> usize {
    (128 / layout.width.max(layout.height).max(1)).clamp(1, 32)
}

/// Write the per-label images and the overview under `dir`; returns the file names written.
pub fn write_scan_images(
    dir: &Path,
    res: &ScanResult,
    first_input: &[f32],
    range: (f64, f64),
) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let layout = &res.layout;
    let f = factor(layout);
    let mut files = Vec::new();
    let mut put = |name: String, img: &Image| -> std::io::Result<()> {
        write(&dir.join(&name), &img.upscale(f))?;
        files.push(name);
        Ok(())
    };
    for l in &res.labels {
        let t = &l.trigger;
        put(
            format!("label_{}_mask.png", l.label),
            &mask_image(layout, t),
        )?;
        put(
            format!("label_{}_trigger.png", l.label),
            &trigger_image(layout, t, range),
        )?;
        let mut stamped = Vec::new();
        trigger::stamp(layout, first_input, &t.mask, &t.pattern, &mut stamped);
        put(
            format!("label_{}_stamped.png", l.label),
            &picture(layout, &stamped, range),
        )?;
    }
    // Overview: masks on top, triggers below, a gap of 8 pixels, flagged labels framed red.
    let (cw, ch) = (layout.width * f, layout.height * f);
    let gap = 8;
    let n = res.labels.len();
    let mut ov = Image::blank(n * (cw + gap) + gap, 2 * (ch + gap) + gap, 3, 48);
    for (k, l) in res.labels.iter().enumerate() {
        let x = gap + k * (cw + gap);
        ov.blit(&mask_image(layout, &l.trigger).upscale(f), x, gap);
        ov.blit(
            &trigger_image(layout, &l.trigger, range).upscale(f),
            x,
            2 * gap + ch,
        );
        if l.flagged {
            ov.frame(x - 3, gap - 3, cw + 6, 2 * ch + gap + 6, [230, 40, 40], 3);
        }
    }
    write(&dir.join("overview.png"), &ov)?;
    files.push("overview.png".into());
    Ok(files)
}
