//! Where each part of the screen goes, for a terminal of a given size. Shared by drawing and
//! by the update logic, which needs the message pane's size to page and to keep the view
//! still while scrolled up.

use ratatui::layout::Rect;

/// Below this terminal width the sidebar is hidden (the status bar lists activity instead),
/// so the messages keep a usable width down to 40 columns.
pub const SIDEBAR_MIN_TERMINAL_WIDTH: u16 = 60;
/// The sidebar takes a fifth of the width, within these bounds (its border included).
pub const SIDEBAR_MIN: u16 = 18;
pub const SIDEBAR_MAX: u16 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub sidebar: Option<Rect>,
    pub messages: Rect,
    /// The status line for command results and errors, when there is one to show.
    pub notice: Option<Rect>,
    pub status: Rect,
    pub input: Rect,
}

impl Areas {
    pub fn new(area: Rect, notice: bool) -> Areas {
        let row = |y: u16| Rect::new(area.x, y, area.width, 1.min(area.height));
        let bottom = area.y + area.height;
        let input = row(bottom.saturating_sub(1).max(area.y));
        let status = row(bottom.saturating_sub(2).max(area.y));
        let reserved = if notice { 3 } else { 2 };
        let notice = notice.then(|| row(bottom.saturating_sub(3).max(area.y)));
        let main = Rect::new(area.x, area.y, area.width, area.height.saturating_sub(reserved));
        let (sidebar, messages) = if area.width >= SIDEBAR_MIN_TERMINAL_WIDTH {
            let w = (area.width / 5).clamp(SIDEBAR_MIN, SIDEBAR_MAX);
            (
                Some(Rect::new(main.x, main.y, w, main.height)),
                Rect::new(main.x + w, main.y, main.width - w, main.height),
            )
        } else {
            (None, main)
        };
        Areas {
            sidebar,
            messages,
            notice,
            status,
            input,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_fits_down_to_40_by_10() {
        let a = Areas::new(Rect::new(0, 0, 100, 30), true);
        assert_eq!(a.sidebar, Some(Rect::new(0, 0, 20, 27)));
        assert_eq!(a.messages, Rect::new(20, 0, 80, 27));
        assert_eq!((a.notice.map(|r| r.y), a.status.y, a.input.y), (Some(27), 28, 29));
        let a = Areas::new(Rect::new(0, 0, 40, 10), false);
        assert_eq!(a.sidebar, None);
        assert_eq!(a.messages, Rect::new(0, 0, 40, 8));
        let a = Areas::new(Rect::new(0, 0, 1, 1), true);
        assert_eq!(a.messages.height, 0);
    }
}
