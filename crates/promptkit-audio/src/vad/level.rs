//! The level meter of the energy detector: a speech-band RMS level, smoothed, over a noise
//! floor that follows the window minimum.

use std::collections::VecDeque;
use std::f32::consts::PI;
use std::time::Duration;

/// Attack time constant: Go's 0.3 per 20 ms chunk.
pub(crate) const ATTACK: Duration = Duration::from_micros(56_070);
/// Release time constant: Go's 0.7 per 20 ms chunk.
pub(crate) const RELEASE: Duration = Duration::from_micros(16_612);
/// Floor rise time constant: Go's 0.05 per 20 ms chunk.
pub(crate) const FLOOR_RISE: Duration = Duration::from_micros(389_914);
/// Time constant of the slow level whose window minimum is the floor: long enough that the
/// dips of fluctuating noise (babble, traffic) do not drag the floor far below the noise's
/// mean, short enough that the pauses of speech still reach down to the noise.
const FLOOR_SMOOTHING: Duration = Duration::from_millis(300);
/// The starting floor (threshold 0.015), before the first frame sets it.
const FLOOR_INIT: f32 = 0.005;
/// Floor clamp.
const FLOOR_MIN: f32 = 0.0005;
const FLOOR_MAX: f32 = 0.05;
/// The speech band the level is measured in: below it hum and rumble, above it hiss.
const BAND_LOW_HZ: f32 = 100.0;
const BAND_HIGH_HZ: f32 = 4000.0;

/// The smoothing factor of a step of `step` for a time constant `tau`.
pub(crate) fn factor(step: Duration, tau: Duration) -> f32 {
    1.0 - (-step.as_secs_f32() / tau.as_secs_f32()).exp()
}

/// A second-order Butterworth section (RBJ cookbook), direct form I.
#[derive(Debug, Clone)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    x: [f32; 2],
    y: [f32; 2],
}

impl Biquad {
    fn new(rate: u32, hz: f32, high_pass: bool) -> Self {
        let w = 2.0 * PI * hz / rate as f32;
        let alpha = w.sin() / 2.0_f32.sqrt();
        let cos = w.cos();
        let a0 = 1.0 + alpha;
        let b = if high_pass {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Self {
            b: b.map(|c| c / a0),
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn run(&mut self, x: f32) -> f32 {
        let y = self.b[0] * x + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [x, self.x[0]];
        self.y = [y, self.y[0]];
        y
    }

    fn reset(&mut self) {
        self.x = [0.0; 2];
        self.y = [0.0; 2];
    }
}

/// Measures the smoothed speech-band level of frames and the noise floor under it.
#[derive(Debug, Clone)]
pub(crate) struct LevelMeter {
    high_pass: Biquad,
    /// Only where the rate leaves room above the band (not at 8 kHz).
    low_pass: Option<Biquad>,
    window: Duration,
    smoothed: f32,
    /// The level smoothed by [`FLOOR_SMOOTHING`], for the floor.
    slow: f32,
    floor: f32,
    /// `(time, level)` candidates for the window minimum, levels increasing.
    minima: VecDeque<(Duration, f32)>,
}

impl LevelMeter {
    pub(crate) fn new(rate: u32, window: Duration) -> Self {
        Self {
            high_pass: Biquad::new(rate, BAND_LOW_HZ, true),
            low_pass: (rate as f32 > 2.5 * BAND_HIGH_HZ)
                .then(|| Biquad::new(rate, BAND_HIGH_HZ, false)),
            window,
            smoothed: 0.0,
            slow: 0.0,
            floor: FLOOR_INIT,
            minima: VecDeque::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.high_pass.reset();
        if let Some(low_pass) = &mut self.low_pass {
            low_pass.reset();
        }
        self.smoothed = 0.0;
        self.slow = 0.0;
        self.floor = FLOOR_INIT;
        self.minima.clear();
    }

    /// The smoothed level after the last frame.
    pub(crate) fn level(&self) -> f32 {
        self.smoothed
    }

    /// The noise floor.
    pub(crate) fn floor(&self) -> f32 {
        self.floor
    }

    /// Takes a frame of `samples` lasting `step`, ending at `now`.
    pub(crate) fn measure(&mut self, samples: &[i16], step: Duration, now: Duration) {
        let mut energy = 0.0_f64;
        for &s in samples {
            let mut x = self.high_pass.run(f32::from(s) / 32768.0);
            if let Some(low_pass) = &mut self.low_pass {
                x = low_pass.run(x);
            }
            energy += f64::from(x) * f64::from(x);
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "an RMS in [0, 1] fits an f32"
        )]
        let rms = (energy / samples.len().max(1) as f64).sqrt() as f32;
        if self.minima.is_empty() {
            // The first frame after a start or a reset sets the level and the floor, so the
            // background the stream starts in is not taken for speech while the floor
            // climbs to it; if the stream starts in speech, the floor falls to the room's
            // level at the first pause.
            self.smoothed = rms;
            self.slow = rms;
            self.floor = rms.clamp(FLOOR_MIN, FLOOR_MAX);
        }
        let tau = if rms > self.smoothed { ATTACK } else { RELEASE };
        self.smoothed += factor(step, tau) * (rms - self.smoothed);
        self.slow += factor(step, FLOOR_SMOOTHING) * (rms - self.slow);
        self.track_floor(now, step);
    }

    /// Moves the floor toward the minimum slow level of the window ending at `now`: at once
    /// when it is lower, at Go's rate when it is higher.
    fn track_floor(&mut self, now: Duration, step: Duration) {
        while self
            .minima
            .back()
            .is_some_and(|(_, level)| *level >= self.slow)
        {
            self.minima.pop_back();
        }
        self.minima.push_back((now, self.slow));
        let window_start = now.saturating_sub(self.window);
        while self
            .minima
            .front()
            .is_some_and(|(at, _)| *at < window_start)
        {
            self.minima.pop_front();
        }
        let minimum = self.minima.front().map_or(self.slow, |(_, level)| *level);
        let target = minimum.clamp(FLOOR_MIN, FLOOR_MAX);
        self.floor = if target < self.floor {
            target
        } else {
            self.floor + factor(step, FLOOR_RISE) * (target - self.floor)
        };
    }
}
