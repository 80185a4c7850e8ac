//! UI-DSL: a small JSON language describing one app page (see `data/uidsl/SCHEMA.md`).
//!
//! A document is `{"page": {"name", "theme", "sections": [...]}}`. Every section has a
//! `"type"`; movable sections also carry a `"position"` (`top`, `middle`, `bottom`), while
//! `nav_bar` is always at the top and `tab_bar` and `footer` always at the bottom. Sections are
//! listed from the top of the page to the bottom.

mod validate;

use serde::{Deserialize, Serialize};

pub use validate::validate_uidsl;

use crate::names::named_enum;

/// Most sections a page may have.
pub const MAX_SECTIONS: usize = 8;
/// Longest page name, in bytes.
pub const MAX_NAME_LEN: usize = 40;
/// Allowed `columns` of a `product_grid`.
pub const GRID_COLUMNS: std::ops::RangeInclusive<u8> = 1..=4;
/// Allowed `slides` of a `carousel`.
pub const CAROUSEL_SLIDES: std::ops::RangeInclusive<u8> = 2..=6;
/// Allowed number of `fields` of a `form`.
pub const FORM_FIELDS: std::ops::RangeInclusive<usize> = 1..=6;
/// Allowed number of `items` of a `tab_bar`.
pub const TAB_ITEMS: std::ops::RangeInclusive<usize> = 2..=5;
/// Allowed number of `links` of a `footer`.
pub const FOOTER_LINKS: std::ops::RangeInclusive<usize> = 1..=5;

named_enum! {
    /// The colour theme of a page.
    ///
    /// ```
    /// use uidsl::Theme;
    ///
    /// assert_eq!(Theme::from_name("sakura-pink"), Some(Theme::SakuraPink));
    /// assert_eq!(Theme::ObsidianGold.to_string(), "obsidian-gold");
    /// ```
    pub enum Theme {
        /// Black and gold (黑金).
        ObsidianGold => "obsidian-gold",
        /// Ocean blue (海洋蓝).
        OceanBlue => "ocean-blue",
        /// Forest green (森林绿).
        ForestGreen => "forest-green",
        /// Sunset orange (日落橙).
        SunsetOrange => "sunset-orange",
        /// Minimal white (极简白).
        MinimalWhite => "minimal-white",
        /// Night purple (暗夜紫).
        NightPurple => "night-purple",
        /// Graphite grey (石墨灰).
        GraphiteGray => "graphite-gray",
        /// Sakura pink (樱花粉).
        SakuraPink => "sakura-pink",
    }
}

named_enum! {
    /// Where on the page a section sits; sections are ordered top, middle, bottom.
    ///
    /// ```
    /// use uidsl::Position;
    ///
    /// assert!(Position::Top < Position::Bottom);
    /// assert_eq!(Position::names(), ["top", "middle", "bottom"]);
    /// ```
    pub enum Position {
        /// The top of the page.
        Top => "top",
        /// The middle of the page.
        Middle => "middle",
        /// The bottom of the page.
        Bottom => "bottom",
    }
}

named_enum! {
    /// The `"type"` of a section. The declaration order is the order of sections that share a
    /// position in generated pages.
    ///
    /// ```
    /// use uidsl::{Position, SectionType};
    ///
    /// assert_eq!(SectionType::TabBar.fixed_position(), Some(Position::Bottom));
    /// assert_eq!(SectionType::Carousel.fixed_position(), None);
    /// ```
    pub enum SectionType {
        /// Top navigation bar with a title, optionally a back button (顶部导航栏).
        NavBar => "nav_bar",
        /// Search field (搜索栏).
        SearchBar => "search_bar",
        /// Static banner image (横幅).
        Banner => "banner",
        /// Sliding images (轮播图).
        Carousel => "carousel",
        /// Grid of product cards (商品卡).
        ProductGrid => "product_grid",
        /// Vertical list of items (列表).
        List => "list",
        /// Input form (表单).
        Form => "form",
        /// A single action button (按钮).
        Button => "button",
        /// Page footer with links (页脚).
        Footer => "footer",
        /// Bottom tab bar (底部导航).
        TabBar => "tab_bar",
    }
}

impl SectionType {
    /// The position a section of this type always has (and then does not spell out), or
    /// `None` for movable sections, which carry a `"position"`.
    pub const fn fixed_position(self) -> Option<Position> {
        match self {
            Self::NavBar => Some(Position::Top),
            Self::TabBar | Self::Footer => Some(Position::Bottom),
            _ => None,
        }
    }
}

named_enum! {
    /// The card a `product_grid` shows.
    ///
    /// ```
    /// assert_eq!(uidsl::CardKind::ProductCard.as_str(), "product_card");
    /// ```
    pub enum CardKind {
        /// Image, title and price of a product.
        ProductCard => "product_card",
    }
}

named_enum! {
    /// What a `list` lists.
    ///
    /// ```
    /// assert_eq!(uidsl::ListItem::from_name("order"), Some(uidsl::ListItem::Order));
    /// ```
    pub enum ListItem {
        /// Products (商品).
        Product => "product",
        /// Orders (订单).
        Order => "order",
        /// Messages (消息).
        Message => "message",
        /// Addresses (地址).
        Address => "address",
        /// Settings entries (设置项).
        Setting => "setting",
        /// Articles (文章).
        Article => "article",
    }
}

named_enum! {
    /// An input field of a `form`.
    ///
    /// ```
    /// assert_eq!(uidsl::FormField::Password.as_str(), "password");
    /// ```
    pub enum FormField {
        /// User name (用户名).
        Username => "username",
        /// Password (密码).
        Password => "password",
        /// Phone number (手机号).
        Phone => "phone",
        /// E-mail address (邮箱).
        Email => "email",
        /// Verification code (验证码).
        Code => "code",
        /// Nickname (昵称).
        Nickname => "nickname",
        /// Postal address (收货地址).
        Address => "address",
    }
}

named_enum! {
    /// What a `button` does.
    ///
    /// ```
    /// assert_eq!(uidsl::ButtonAction::AddToCart.as_str(), "add_to_cart");
    /// ```
    pub enum ButtonAction {
        /// Submit a form (提交).
        Submit => "submit",
        /// Log in (登录).
        Login => "login",
        /// Register (注册).
        Register => "register",
        /// Go to checkout (结算).
        Checkout => "checkout",
        /// Add to the cart (加入购物车).
        AddToCart => "add_to_cart",
        /// Buy now (立即购买).
        BuyNow => "buy_now",
        /// Log out (退出登录).
        Logout => "logout",
    }
}

named_enum! {
    /// An entry of a `tab_bar`.
    ///
    /// ```
    /// assert_eq!(uidsl::TabItem::Me.as_str(), "me");
    /// ```
    pub enum TabItem {
        /// Home (首页).
        Home => "home",
        /// Categories (分类).
        Category => "category",
        /// Shopping cart (购物车).
        Cart => "cart",
        /// Messages (消息).
        Messages => "messages",
        /// Discover (发现).
        Discover => "discover",
        /// Orders (订单).
        Orders => "orders",
        /// The user's own page (我的).
        Me => "me",
    }
}

named_enum! {
    /// A link of a `footer`.
    ///
    /// ```
    /// assert_eq!(uidsl::FooterLink::Privacy.as_str(), "privacy");
    /// ```
    pub enum FooterLink {
        /// About us (关于我们).
        About => "about",
        /// Contact (联系我们).
        Contact => "contact",
        /// Help centre (帮助中心).
        Help => "help",
        /// Privacy policy (隐私政策).
        Privacy => "privacy",
        /// Terms of use (用户协议).
        Terms => "terms",
    }
}

/// A UI-DSL document: `{"page": {...}}`.
///
/// ```
/// use uidsl::{Page, Position, Section, Theme, UiDsl};
///
/// let doc = UiDsl {
///     page: Page {
///         name: "home_page".into(),
///         theme: Theme::ObsidianGold,
///         sections: vec![Section::SearchBar { position: Position::Top }],
///     },
/// };
/// let json = doc.to_json_minified();
/// assert_eq!(
///     json,
///     r#"{"page":{"name":"home_page","theme":"obsidian-gold","sections":[{"type":"search_bar","position":"top"}]}}"#
/// );
/// let value: serde_json::Value = serde_json::from_str(&json).unwrap();
/// assert_eq!(UiDsl::from_value(&value).unwrap(), doc);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiDsl {
    /// The page.
    pub page: Page,
}

/// One page: a snake_case `name`, a `theme` and its `sections` from top to bottom.
///
/// ```
/// use uidsl::{Page, Theme};
///
/// let page = Page { name: "login_page".into(), theme: Theme::OceanBlue, sections: vec![] };
/// assert_eq!(page.theme.as_str(), "ocean-blue");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// snake_case name (`home_page`), at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The colour theme.
    pub theme: Theme,
    /// 1 to [`MAX_SECTIONS`] sections, ordered top, middle, bottom.
    pub sections: Vec<Section>,
}

/// A section of a page, tagged by `"type"`.
///
/// ```
/// use uidsl::{CardKind, Position, Section, SectionType};
///
/// let grid = Section::ProductGrid { position: Position::Middle, columns: 2, card: CardKind::ProductCard };
/// assert_eq!(grid.section_type(), SectionType::ProductGrid);
/// assert_eq!(
///     serde_json::to_string(&grid).unwrap(),
///     r#"{"type":"product_grid","position":"middle","columns":2,"card":"product_card"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Section {
    /// Top navigation bar (always at the top).
    NavBar {
        /// Whether it shows a back button.
        back: bool,
    },
    /// Search field.
    SearchBar {
        /// Where it sits.
        position: Position,
    },
    /// Static banner.
    Banner {
        /// Where it sits.
        position: Position,
    },
    /// Image carousel.
    Carousel {
        /// Where it sits.
        position: Position,
        /// Number of slides, in [`CAROUSEL_SLIDES`].
        slides: u8,
    },
    /// Grid of product cards.
    ProductGrid {
        /// Where it sits.
        position: Position,
        /// Cards per row, in [`GRID_COLUMNS`].
        columns: u8,
        /// The card shown.
        card: CardKind,
    },
    /// Vertical list.
    List {
        /// Where it sits.
        position: Position,
        /// What it lists.
        item: ListItem,
    },
    /// Input form.
    Form {
        /// Where it sits.
        position: Position,
        /// Distinct fields, as many as [`FORM_FIELDS`] allows.
        fields: Vec<FormField>,
    },
    /// Single button.
    Button {
        /// Where it sits.
        position: Position,
        /// What it does.
        action: ButtonAction,
    },
    /// Footer (always at the bottom).
    Footer {
        /// Distinct links, as many as [`FOOTER_LINKS`] allows.
        links: Vec<FooterLink>,
    },
    /// Bottom tab bar (always at the bottom).
    TabBar {
        /// Distinct entries, as many as [`TAB_ITEMS`] allows.
        items: Vec<TabItem>,
    },
}

impl Section {
    /// The section's `"type"`.
    ///
    /// ```
    /// use uidsl::{Section, SectionType};
    /// assert_eq!(Section::NavBar { back: true }.section_type(), SectionType::NavBar);
    /// ```
    pub fn section_type(&self) -> SectionType {
        match self {
            Self::NavBar { .. } => SectionType::NavBar,
            Self::SearchBar { .. } => SectionType::SearchBar,
            Self::Banner { .. } => SectionType::Banner,
            Self::Carousel { .. } => SectionType::Carousel,
            Self::ProductGrid { .. } => SectionType::ProductGrid,
            Self::List { .. } => SectionType::List,
            Self::Form { .. } => SectionType::Form,
            Self::Button { .. } => SectionType::Button,
            Self::Footer { .. } => SectionType::Footer,
            Self::TabBar { .. } => SectionType::TabBar,
        }
    }

    /// Where the section sits: its `"position"`, or its type's fixed position.
    ///
    /// ```
    /// use uidsl::{Position, Section};
    /// assert_eq!(Section::Footer { links: vec![] }.position(), Position::Bottom);
    /// ```
    pub fn position(&self) -> Position {
        match self {
            Self::SearchBar { position }
            | Self::Banner { position }
            | Self::Carousel { position, .. }
            | Self::ProductGrid { position, .. }
            | Self::List { position, .. }
            | Self::Form { position, .. }
            | Self::Button { position, .. } => *position,
            Self::NavBar { .. } => Position::Top,
            Self::Footer { .. } | Self::TabBar { .. } => Position::Bottom,
        }
    }
}

impl UiDsl {
    /// The document as minified JSON (keys in schema order).
    pub fn to_json_minified(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a document after checking it with [`validate_uidsl`]; the errors name JSON paths.
    ///
    /// # Errors
    /// Every schema violation, one message per problem with its JSON path (as
    /// [`validate_uidsl`](crate::validate_uidsl)).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Vec<String>> {
        validate_uidsl(value)?;
        serde_json::from_value(value.clone()).map_err(|e| vec![format!("$: {e}")])
    }
}
