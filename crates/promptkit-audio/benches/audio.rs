//! Benchmarks of the audio toolbox, each beside its floor: a copy of the same bytes.
//! Results and targets: `docs/benchmarks.md`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use promptkit_audio::resample::Resampler;
use promptkit_audio::{EarshotVadConfig, EnergyVadConfig, g711, pcm};
use promptkit_core::{AudioFormat, AudioFrame, VadFactory};

/// Speech-like test signal: a tone with a varying envelope and a little noise.
fn signal(rate: u32, len: usize) -> Vec<i16> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..len)
        .map(|n| {
            let t = n as f32 / rate as f32;
            let envelope = 0.5 + 0.5 * (t * 3.0).sin();
            let x = envelope * 0.3 * (t * 2.0 * std::f32::consts::PI * 220.0).sin()
                + 0.01 * (rng.f32() - 0.5);
            pcm::f32_sample_to_i16(x)
        })
        .collect()
}

fn vads(c: &mut Criterion) {
    let mut group = c.benchmark_group("vad");
    // Energy: one 20 ms frame at 16 kHz.
    let frames: Vec<AudioFrame> = signal(16_000, 16_000)
        .chunks(320)
        .map(|s| AudioFrame::new(pcm::i16_bytes(s), AudioFormat::PCM16_16K_MONO))
        .collect();
    group.bench_function("copy of a 20 ms frame (floor)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(frames[i].data.to_vec())
        });
    });
    let mut energy = EnergyVadConfig::new(16_000).fresh().unwrap();
    group.bench_function("energy, 20 ms frame", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(energy.process(&frames[i]).unwrap())
        });
    });
    // Earshot: one 16 ms frame (its size).
    let frames: Vec<AudioFrame> = signal(16_000, 16_128)
        .chunks(256)
        .map(|s| AudioFrame::new(pcm::i16_bytes(s), AudioFormat::PCM16_16K_MONO))
        .collect();
    let mut earshot = EarshotVadConfig::new().fresh().unwrap();
    group.bench_function("earshot, 16 ms frame", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(earshot.process(&frames[i]).unwrap())
        });
    });
    group.finish();
}

fn resampling(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample");
    let second = signal(48_000, 48_000);
    let bytes = pcm::i16_bytes(&second);
    group.bench_function("copy of 1 s at 48 kHz (floor)", |b| {
        b.iter(|| black_box(bytes.clone()));
    });
    let mut resampler = Resampler::new(48_000, 16_000).unwrap();
    let mut out = Vec::with_capacity(16_100);
    group.bench_function("48 kHz to 16 kHz, 1 s in 20 ms chunks", |b| {
        b.iter(|| {
            out.clear();
            for chunk in second.chunks(960) {
                resampler.process_i16(chunk, &mut out);
            }
            black_box(out.len())
        });
    });
    group.finish();
}

fn g711_codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("g711");
    // One second at 8 kHz.
    let bytes = pcm::i16_bytes(&signal(8_000, 8_000));
    let mut ulaw = Vec::new();
    g711::encode_ulaw(&bytes, &mut ulaw);
    group.bench_function("copy of 1 s of PCM16 at 8 kHz (floor)", |b| {
        b.iter(|| black_box(bytes.clone()));
    });
    let mut out = Vec::with_capacity(16_000);
    group.bench_function("mu-law encode, 1 s at 8 kHz", |b| {
        b.iter(|| {
            out.clear();
            g711::encode_ulaw(black_box(&bytes), &mut out);
            black_box(out.len())
        });
    });
    group.bench_function("mu-law decode, 1 s at 8 kHz", |b| {
        b.iter(|| {
            out.clear();
            g711::decode_ulaw(black_box(&ulaw), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

/// Noise suppression per 10 ms frame at 48 kHz, against a copy of the frame.
#[cfg(feature = "denoise")]
fn denoising(c: &mut Criterion) {
    use promptkit_audio::denoise::NoiseSuppressor;
    let mut group = c.benchmark_group("denoise");
    let frame = signal(48_000, NoiseSuppressor::FRAME);
    group.bench_function("copy of a 10 ms frame at 48 kHz (floor)", |b| {
        b.iter(|| black_box(&frame).clone());
    });
    let mut suppressor = NoiseSuppressor::new();
    let mut out = Vec::with_capacity(2 * NoiseSuppressor::FRAME);
    group.bench_function("RNNoise, 10 ms frame at 48 kHz", |b| {
        b.iter(|| {
            out.clear();
            suppressor.process_i16(black_box(&frame), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

#[cfg(not(feature = "denoise"))]
fn denoising(_: &mut Criterion) {}

criterion_group!(benches, vads, resampling, g711_codecs, denoising);
criterion_main!(benches);
