//! Drawing a [`Plot`] with `plotters`, once as PNG and once as SVG.
//!
//! Text is rendered with the DejaVu Sans font shipped in `assets/` through
//! plotters' pure-Rust `ab_glyph` support, so rendering needs neither system
//! fonts nor fontconfig/freetype.
//!
//! Layout, top to bottom: title; a strip for the event-marker labels (as
//! many rows as needed so labels of close events do not overlap); the chart.
//! The legend sits right of the chart, outside the data, so it never hides a
//! line.

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::plot::{Marker, MarkerKind, Plot};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 620;

/// Registered under plotters' generic family name so that every default
/// style inside plotters (mesh labels, ...) finds it too.
const FAMILY: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const TITLE_PX: u32 = 24;
const AXIS_DESC_PX: u32 = 17;
const TICK_PX: u32 = 15;
const LEGEND_PX: u32 = 16;
const MARKER_PX: u32 = 14;

const X_LABEL_AREA: u32 = 50;
const Y_LABEL_AREA: u32 = 72;
const CHART_RIGHT_PAD: u32 = 14;
const MARKER_ROW_H: i32 = 20;
/// Horizontal space kept between two marker labels in the same row.
const MARKER_LABEL_GAP: i32 = 10;
const LEGEND_SAMPLE_W: i32 = 28;
const LEGEND_ROW_H: i32 = 24;

/// Tableau 10: distinguishable, and friendlier to colour-blind readers than
/// plotters' default palette.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4E, 0x79, 0xA7),
    RGBColor(0xF2, 0x8E, 0x2B),
    RGBColor(0xE1, 0x57, 0x59),
    RGBColor(0x76, 0xB7, 0xB2),
    RGBColor(0x59, 0xA1, 0x4F),
    RGBColor(0xB0, 0x7A, 0xA1),
    RGBColor(0xED, 0xC9, 0x48),
    RGBColor(0xFF, 0x9D, 0xA7),
    RGBColor(0x9C, 0x75, 0x5F),
    RGBColor(0xBA, 0xB0, 0xAC),
];
const EMPHASIS: RGBColor = RGBColor(0x20, 0x20, 0x20);
const BOUND: RGBColor = RGBColor(0xC0, 0x1C, 0x28);
const GRID: RGBColor = RGBColor(0xE4, 0xE4, 0xE4);
const MUTED: RGBColor = RGBColor(0x70, 0x70, 0x70);

type DrawResult<T, DB> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Writes `DIR/STEM.png` and `DIR/STEM.svg`.
pub fn write_plot(plot: &Plot, dir: &Path, stem: &str) -> io::Result<()> {
    register_bundled_font()?;

    let png = dir.join(format!("{stem}.png"));
    let root = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, plot).map_err(plot_error)?;
    root.present().map_err(plot_error)?;

    let svg = dir.join(format!("{stem}.svg"));
    let root = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, plot).map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The plot as an SVG document, for a page that shows it inline.
pub fn svg_string(plot: &Plot) -> io::Result<String> {
    register_bundled_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, plot).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

/// plotters' `ab_glyph` font table is process-wide, so register once.
fn register_bundled_font() -> io::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(
            "the bundled DejaVu Sans font could not be parsed",
        ))
    }
}

fn plot_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing a plot: {e}"))
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &Plot) -> DrawResult<(), DB> {
    root.fill(&WHITE)?;
    let body = root
        .margin(6, 10, 12, 12)
        .titled(&plot.title, text(TITLE_PX, &BLACK))?;

    let legend = legend_entries(plot);
    let legend_w = legend_width(root, &legend)?;
    let body_w = body.dim_in_pixel().0 as i32;
    let (chart_area, legend_area) = body.split_horizontally(body_w - legend_w);

    let x_range = 0.0..plot.x_max;
    let y_range = 0.0..y_top(plot);
    // Marker labels may run on over the legend column: the legend starts
    // lower, at the top of the plotting area.
    let labels_right_edge = body.get_base_pixel().0 + body_w;
    let labels = place_marker_labels(
        root,
        &chart_area,
        labels_right_edge,
        (&x_range, &y_range),
        &plot.markers,
    )?;
    let rows = labels.iter().map(|l| l.row + 1).max().unwrap_or(0) as i32;
    let (_strip, plot_area) = chart_area.split_vertically(rows * MARKER_ROW_H + 8);

    let mut chart = build_chart(&plot_area, x_range, y_range)?;
    draw_mesh(&mut chart, plot)?;
    if let Some(bound) = plot.bound {
        draw_bound(root, &chart, bound)?;
    }
    draw_markers(root, &chart, &labels)?;
    draw_series(&mut chart, plot)?;
    if !plot.has_data() {
        draw_no_data(root, &chart)?;
    }
    let legend_top = chart.plotting_area().get_pixel_range().1.start;
    draw_legend(root, &legend_area, legend_top, &legend)?;
    Ok(())
}

fn text(px: u32, color: &RGBColor) -> TextStyle<'static> {
    (FAMILY, px).into_font().color(color)
}

/// Leaves headroom above the highest value; never an empty range.
fn y_top(plot: &Plot) -> f64 {
    (plot.y_data_max() * 1.1).max(1.0)
}

/// Used twice with the same settings: once only to learn where the x axis
/// will fall (to lay out marker labels), once for real.
fn build_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: Range<f64>,
    y: Range<f64>,
) -> DrawResult<Chart<'a, DB>, DB> {
    ChartBuilder::on(area)
        .margin_right(CHART_RIGHT_PAD)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, y)
}

fn draw_mesh<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, plot: &Plot) -> DrawResult<(), DB> {
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(plot.y_label.as_str())
        .x_labels(14)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(text(TICK_PX, &BLACK))
        .axis_desc_style(text(AXIS_DESC_PX, &BLACK))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()
}

/// Axis numbers without trailing zeros: `10`, `2.5`, `0.25`.
fn tick(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Each value covers its whole second, so lines are drawn as steps: a
/// change shows at the second it happened, not smeared over the one before.
/// A series is cut where it has no value, so a gap stays a gap.
fn draw_series<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, plot: &Plot) -> DrawResult<(), DB> {
    // The emphasized ("all regions") line goes last so it stays on top.
    let ordered = plot.series.iter().enumerate();
    let (emphasized, normal): (Vec<_>, Vec<_>) = ordered.partition(|(_, s)| s.emphasized);
    for (index, series) in normal.into_iter().chain(emphasized) {
        let style = series_style(index, series.emphasized);
        for steps in step_paths(&series.points) {
            chart.draw_series(LineSeries::new(steps, style))?;
        }
    }
    Ok(())
}

fn series_style(index: usize, emphasized: bool) -> ShapeStyle {
    if emphasized {
        EMPHASIS.stroke_width(3)
    } else {
        PALETTE[index % PALETTE.len()].stroke_width(2)
    }
}

/// One step path per stretch of consecutive seconds that have a value.
/// Points are only added where the value changes: plotters draws wide lines
/// as polygons, and repeated points make their joins jagged.
fn step_paths(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut paths: Vec<Vec<(f64, f64)>> = vec![];
    let mut last: Option<(f64, f64)> = None;
    for &(t, value) in points {
        match (value, last) {
            // A second missing from the timeline breaks the line too.
            (Some(v), Some((last_t, last_v))) if last_t == t - 1.0 => {
                if v != last_v {
                    let path = paths.last_mut().expect("a path is open");
                    path.extend([(t, last_v), (t, v)]);
                }
                last = Some((t, v));
            }
            (Some(v), _) => {
                close_step_path(&mut paths, last);
                paths.push(vec![(t, v)]);
                last = Some((t, v));
            }
            (None, _) => {
                close_step_path(&mut paths, last);
                last = None;
            }
        }
    }
    close_step_path(&mut paths, last);
    paths
}

/// Carries the open path to the end of its last second.
fn close_step_path(paths: &mut [Vec<(f64, f64)>], last: Option<(f64, f64)>) {
    if let (Some((t, v)), Some(path)) = (last, paths.last_mut()) {
        path.push((t + 1.0, v));
    }
}

fn draw_bound<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    bound: f64,
) -> DrawResult<(), DB> {
    let (x_px, _) = chart.plotting_area().get_pixel_range();
    let (_, y) = chart.backend_coord(&(0.0, bound));
    dashed_line(root, (x_px.start, y), (x_px.end, y), BOUND.stroke_width(2))
}

fn draw_no_data<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
) -> DrawResult<(), DB> {
    let (x, y) = chart.plotting_area().get_pixel_range();
    let centre = ((x.start + x.end) / 2, (y.start + y.end) / 2);
    let style = text(AXIS_DESC_PX, &MUTED).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text("no per-second data in this report", &style, centre)
}

// ---- event markers -------------------------------------------------------

/// A marker label's place in the strip above the chart.
struct MarkerLabel {
    marker: Marker,
    /// Pixel column of the marker's line.
    line_x: i32,
    /// Pixel columns the label text covers.
    span: Range<i32>,
    /// Row 0 is the one nearest to the chart; the line reaches up to its
    /// label's row.
    row: usize,
}

impl MarkerLabel {
    fn right_of_line(&self) -> bool {
        self.span.start > self.line_x
    }

    /// Whether the two cannot both stand: labels in one row overlapping, or
    /// the line of one running up through the other's label.
    fn conflicts(&self, other: &MarkerLabel) -> bool {
        let same_row_overlap = self.row == other.row
            && self.span.start < other.span.end + MARKER_LABEL_GAP
            && other.span.start < self.span.end + MARKER_LABEL_GAP;
        same_row_overlap || self.crosses(other) || other.crosses(self)
    }

    fn crosses(&self, label: &MarkerLabel) -> bool {
        self.row > label.row
            && label.span.start - 2 <= self.line_x
            && self.line_x <= label.span.end + 2
    }
}

fn marker_color(kind: MarkerKind) -> RGBColor {
    match kind {
        MarkerKind::Fault => RGBColor(0xC0, 0x1C, 0x28),
        MarkerKind::Detected => RGBColor(0xD9, 0x6C, 0x00),
        MarkerKind::Mitigated => RGBColor(0x2E, 0x7D, 0x32),
        MarkerKind::Restored => RGBColor(0x15, 0x65, 0xC0),
        MarkerKind::Recovered => RGBColor(0x6A, 0x1B, 0x9A),
        MarkerKind::Occurred => RGBColor(0x8B, 0x00, 0x00),
        MarkerKind::Notified => RGBColor(0x00, 0x83, 0x8F),
    }
}

/// Fault, detection and mitigation often come within a second or two, so
/// their labels cannot share a row. Labels go right of their line, or left of
/// it when they would run off the right edge; then each takes the lowest row
/// where it neither overlaps another label nor has a line run through it.
fn place_marker_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart_area: &DrawingArea<DB, Shift>,
    right_edge: i32,
    (x_range, y_range): (&Range<f64>, &Range<f64>),
    markers: &[Marker],
) -> DrawResult<Vec<MarkerLabel>, DB> {
    let probe = build_chart(chart_area, x_range.clone(), y_range.clone())?;
    let left_edge = chart_area.get_base_pixel().0;
    let mut unplaced = vec![];
    for marker in markers
        .iter()
        .filter(|m| (x_range.start..=x_range.end).contains(&m.at_s))
    {
        let (line_x, _) = probe.backend_coord(&(marker.at_s, 0.0));
        let (w, _) = root.estimate_text_size(&marker.label(), &text(MARKER_PX, &BLACK))?;
        let right = line_x + 4..line_x + 4 + w as i32;
        let span = if right.end <= right_edge {
            right
        } else {
            (line_x - 4 - w as i32).max(left_edge)..line_x - 4
        };
        unplaced.push(MarkerLabel {
            marker: marker.clone(),
            line_x,
            span,
            row: 0,
        });
    }

    let mut placed: Vec<MarkerLabel> = vec![];
    while let Some(next) = next_to_place(&unplaced) {
        let mut label = unplaced.swap_remove(next);
        while placed.iter().any(|p| label.conflicts(p)) && label.row <= placed.len() {
            label.row += 1;
        }
        placed.push(label);
    }
    Ok(placed)
}

/// A label must sit above every line that runs under it, so those markers
/// are placed first: then climbing to the first free row always clears their
/// lines. Among the ready ones the latest goes first, which stacks labels of
/// close events into a staircase rising towards the earliest. (A cycle,
/// possible only at the right edge, is broken by taking the latest anyway.)
fn next_to_place(unplaced: &[MarkerLabel]) -> Option<usize> {
    let covers = |label: &MarkerLabel, other: &MarkerLabel| {
        !std::ptr::eq(label, other) && label.span.contains(&other.line_x)
    };
    let latest = |a: &(usize, &MarkerLabel), b: &(usize, &MarkerLabel)| {
        a.1.marker.at_s.total_cmp(&b.1.marker.at_s)
    };
    let ready = unplaced
        .iter()
        .enumerate()
        .filter(|(_, l)| !unplaced.iter().any(|other| covers(l, other)))
        .max_by(latest);
    ready
        .or_else(|| unplaced.iter().enumerate().max_by(latest))
        .map(|(i, _)| i)
}

/// A dashed line from the bottom of the chart up to the marker's label row,
/// with the label as a flag at its top.
fn draw_markers<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    labels: &[MarkerLabel],
) -> DrawResult<(), DB> {
    let (_, y_px) = chart.plotting_area().get_pixel_range();
    for label in labels {
        let color = marker_color(label.marker.kind);
        let row_centre = y_px.start - MARKER_ROW_H * label.row as i32 - MARKER_ROW_H / 2 - 4;
        let top = row_centre - MARKER_ROW_H / 2 + 3;
        let x = label.line_x;
        dashed_line(root, (x, y_px.end), (x, top), color.stroke_width(2))?;

        let (text_x, h_pos) = if label.right_of_line() {
            (label.span.start, HPos::Left)
        } else {
            (label.span.end, HPos::Right)
        };
        let style = text(MARKER_PX, &color).pos(Pos::new(h_pos, VPos::Center));
        root.draw_text(&label.marker.label(), &style, (text_x, row_centre))?;
    }
    Ok(())
}

/// plotters draws dashed lines only in chart coordinates; marker lines also
/// cross the label strip, so dashes are drawn here in pixels.
fn dashed_line<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    from: (i32, i32),
    to: (i32, i32),
    style: ShapeStyle,
) -> DrawResult<(), DB> {
    const DASH: f64 = 7.0;
    const GAP: f64 = 5.0;
    let (dx, dy) = (f64::from(to.0 - from.0), f64::from(to.1 - from.1));
    let length = dx.hypot(dy);
    if length < 1.0 {
        return Ok(());
    }
    let at = |d: f64| {
        let d = d.min(length);
        (
            from.0 + (dx * d / length).round() as i32,
            from.1 + (dy * d / length).round() as i32,
        )
    };
    let mut d = 0.0;
    while d < length {
        root.draw(&PathElement::new(vec![at(d), at(d + DASH)], style))?;
        d += DASH + GAP;
    }
    Ok(())
}

// ---- legend --------------------------------------------------------------

struct LegendEntry {
    label: String,
    style: ShapeStyle,
    dashed: bool,
}

fn legend_entries(plot: &Plot) -> Vec<LegendEntry> {
    // A series with no value at all has no line to explain.
    let lines = plot
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| s.points.iter().any(|(_, v)| v.is_some()))
        .map(|(i, s)| LegendEntry {
            label: s.name.clone(),
            style: series_style(i, s.emphasized),
            dashed: false,
        });
    let bound = plot.bound.map(|b| LegendEntry {
        label: format!("steady-state bound {}{}", tick(b), plot.y_unit),
        style: BOUND.stroke_width(2),
        dashed: true,
    });
    lines.chain(bound).collect()
}

/// Wide enough for the longest label, within limits that keep the chart the
/// main thing on the page.
fn legend_width<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> DrawResult<i32, DB> {
    let mut widest = 0;
    for entry in entries {
        let (w, _) = root.estimate_text_size(&entry.label, &text(LEGEND_PX, &BLACK))?;
        widest = widest.max(w as i32);
    }
    Ok((widest + LEGEND_SAMPLE_W + 36).clamp(120, 380))
}

fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    top: i32,
    entries: &[LegendEntry],
) -> DrawResult<(), DB> {
    if entries.is_empty() {
        return Ok(());
    }
    let (x0, _) = area.get_base_pixel();
    let (w, _) = area.dim_in_pixel();
    let height = LEGEND_ROW_H * entries.len() as i32 + 8;
    let frame = [(x0 + 4, top), (x0 + w as i32 - 4, top + height)];
    root.draw(&Rectangle::new(frame, WHITE.filled()))?;
    root.draw(&Rectangle::new(frame, GRID.stroke_width(1)))?;

    let style = text(LEGEND_PX, &BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, entry) in entries.iter().enumerate() {
        let y = top + 4 + LEGEND_ROW_H * i as i32 + LEGEND_ROW_H / 2;
        let (from, to) = ((x0 + 12, y), (x0 + 12 + LEGEND_SAMPLE_W, y));
        if entry.dashed {
            dashed_line(root, from, to, entry.style)?;
        } else {
            root.draw(&PathElement::new(vec![from, to], entry.style))?;
        }
        root.draw_text(&entry.label, &style, (to.0 + 8, y))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_change_at_the_second_and_break_at_gaps() {
        let points = [
            (0.0, Some(1.0)),
            (1.0, Some(1.0)),
            (2.0, Some(3.0)),
            (3.0, None),
            (4.0, Some(5.0)),
            (6.0, Some(5.0)),
        ];
        assert_eq!(
            step_paths(&points),
            vec![
                vec![(0.0, 1.0), (2.0, 1.0), (2.0, 3.0), (3.0, 3.0)],
                vec![(4.0, 5.0), (5.0, 5.0)],
                vec![(6.0, 5.0), (7.0, 5.0)],
            ]
        );
    }

    #[test]
    fn ticks_have_no_trailing_zeros() {
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-0.0), "0");
    }
}
