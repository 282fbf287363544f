//! Markdown (postmortems, drill reports) to HTML for the console. Raw HTML
//! in the source is shown as text, never passed through: a note a person
//! typed into an incident ends up in its postmortem, and must not run as a
//! script in a colleague's browser. Links and images keep only relative
//! targets or http(s), with images resolved under a base path.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn safe_target(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        // A scheme before any slash: only the web's own.
        Some((scheme, _)) if !scheme.contains('/') => scheme == "http" || scheme == "https",
        _ => true,
    }
}

/// HTML for `text`. Relative image sources get `image_base` in front (a
/// report's `entry.png` becomes `/ui/drills/NAME/entry.png`); unsafe link
/// and image targets are dropped.
pub fn render(text: &str, image_base: &str) -> String {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(text, opts).map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest: CowStr = if !safe_target(&dest_url) {
                "".into()
            } else if dest_url.contains(':') || dest_url.starts_with('/') {
                dest_url
            } else {
                format!("{}/{}", image_base.trim_end_matches('/'), dest_url).into()
            };
            Event::Start(Tag::Image {
                link_type,
                dest_url: dest,
                title,
                id,
            })
        }
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: if safe_target(&dest_url) {
                dest_url
            } else {
                "".into()
            },
            title,
            id,
        }),
        ev => ev,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_shown_as_text_not_run() {
        let html = render(
            "a note: <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>",
            "/b",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn images_resolve_under_the_base_and_script_links_are_dropped() {
        let html = render(
            "![plot](entry.png) [x](javascript:alert(1)) [y](https://example.com)",
            "/ui/drills/d",
        );
        assert!(html.contains("src=\"/ui/drills/d/entry.png\""), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://example.com\""), "{html}");
    }

    #[test]
    fn tables_render() {
        let html = render("| a | b |\n|---|---|\n| 1 | 2 |\n", "/");
        assert!(html.contains("<table>"), "{html}");
    }
}
