//! The Chinese words and phrase templates the UI-DSL generator draws from: synonyms for
//! themes, positions, page kinds and every section detail.

use crate::schema::{
    ButtonAction, FooterLink, FormField, ListItem, Position, SectionType, TabItem, Theme,
};

/// A kind of page: its `name` in UI-DSL, how instructions call it, and the sections it
/// usually has.
pub(crate) struct PageKind {
    pub name: &'static str,
    pub words: &'static [&'static str],
    pub pool: &'static [SectionType],
}

use SectionType as S;

pub(crate) const PAGE_KINDS: &[PageKind] = &[
    PageKind {
        name: "home_page",
        words: &["首页", "电商首页", "商城首页", "主页"],
        pool: &[
            S::NavBar,
            S::SearchBar,
            S::Banner,
            S::Carousel,
            S::ProductGrid,
            S::List,
            S::TabBar,
            S::Footer,
        ],
    },
    PageKind {
        name: "product_detail",
        words: &["商品详情页", "商品详情页面", "详情页"],
        pool: &[
            S::NavBar,
            S::Carousel,
            S::Banner,
            S::List,
            S::Button,
            S::Footer,
        ],
    },
    PageKind {
        name: "cart_page",
        words: &["购物车页", "购物车页面"],
        pool: &[S::NavBar, S::List, S::ProductGrid, S::Button, S::TabBar],
    },
    PageKind {
        name: "login_page",
        words: &["登录页", "登录页面", "登录界面"],
        pool: &[S::NavBar, S::Banner, S::Form, S::Button, S::Footer],
    },
    PageKind {
        name: "register_page",
        words: &["注册页", "注册页面", "注册界面"],
        pool: &[S::NavBar, S::Banner, S::Form, S::Button, S::Footer],
    },
    PageKind {
        name: "profile_page",
        words: &["个人中心", "个人中心页", "我的页面"],
        pool: &[
            S::NavBar,
            S::Banner,
            S::Carousel,
            S::List,
            S::Button,
            S::TabBar,
        ],
    },
    PageKind {
        name: "search_results",
        words: &["搜索结果页", "搜索结果页面"],
        pool: &[S::NavBar, S::SearchBar, S::ProductGrid, S::List, S::TabBar],
    },
    PageKind {
        name: "order_list",
        words: &["订单列表页", "订单页", "我的订单页"],
        pool: &[S::NavBar, S::SearchBar, S::List, S::Button, S::TabBar],
    },
    PageKind {
        name: "settings_page",
        words: &["设置页", "设置页面"],
        pool: &[S::NavBar, S::List, S::Form, S::Button, S::Footer],
    },
    PageKind {
        name: "message_center",
        words: &["消息中心", "消息页"],
        pool: &[S::NavBar, S::SearchBar, S::Banner, S::List, S::TabBar],
    },
];

/// Openings of an instruction (the empty one twice: most instructions start directly).
pub(crate) const OPENERS: &[&str] = &[
    "",
    "",
    "做一个",
    "设计一个",
    "帮我做一个",
    "生成一个",
    "我想要一个",
];

/// Separators between clauses.
pub(crate) const CLAUSE_SEPARATORS: &[&str] = &["，", ",", "、"];

/// Separators inside a parenthesised list.
pub(crate) const LIST_SEPARATORS: &[&str] = &["、", "/", "，"];

/// Parentheses around a list.
pub(crate) const PARENTHESES: &[(&str, &str)] = &[("（", "）"), ("(", ")")];

/// `{t}` is replaced by the theme word.
pub(crate) const THEME_ADJECTIVES: &[&str] = &["{t}风格", "{t}主题", "{t}配色", "{t}色调"];

/// Theme clauses that stand alone.
pub(crate) const THEME_CLAUSES: &[&str] = &[
    "整体{t}风格",
    "{t}主题",
    "采用{t}配色",
    "风格用{t}",
    "主题色为{t}",
    "使用{t}风格",
];

pub(crate) fn theme_words(theme: Theme) -> &'static [&'static str] {
    match theme {
        Theme::ObsidianGold => &["黑金"],
        Theme::OceanBlue => &["海洋蓝", "海蓝"],
        Theme::ForestGreen => &["森林绿"],
        Theme::SunsetOrange => &["日落橙", "落日橙"],
        Theme::MinimalWhite => &["极简白", "简约白"],
        Theme::NightPurple => &["暗夜紫", "夜空紫"],
        Theme::GraphiteGray => &["石墨灰"],
        Theme::SakuraPink => &["樱花粉"],
    }
}

pub(crate) fn position_words(position: Position) -> &'static [&'static str] {
    match position {
        Position::Top => &["顶部", "上方", "页面顶端", "最上面"],
        Position::Middle => &["中间", "中部", "中间区域", "页面中部"],
        Position::Bottom => &["底部", "下方", "页面底端", "最下面"],
    }
}

/// Where a movable section may be placed by the generator.
pub(crate) fn positions_of(kind: SectionType) -> &'static [Position] {
    use Position::{Bottom, Middle, Top};
    match kind {
        S::SearchBar | S::Banner | S::Carousel => &[Top, Top, Middle],
        S::ProductGrid | S::List => &[Middle, Middle, Bottom],
        S::Form => &[Middle, Middle, Top],
        S::Button => &[Bottom, Bottom, Middle],
        S::NavBar => &[Top],
        S::Footer | S::TabBar => &[Bottom],
    }
}

/// `{p}`: position word, `{n}`: the section's noun phrase.
pub(crate) const PLACED_TEMPLATES: &[&str] = &[
    "{p}{n}",
    "{p}{n}",
    "{p}放{n}",
    "{p}是{n}",
    "{p}显示{n}",
    "{n}放在{p}",
    "{n}在{p}",
];

pub(crate) const SEARCH_NOUNS: &[&str] = &["搜索", "搜索栏", "搜索框"];
pub(crate) const BANNER_NOUNS: &[&str] = &["横幅", "广告横幅", "banner", "横幅广告"];
/// `{k}`: number of slides.
pub(crate) const CAROUSEL_NOUNS: &[&str] = &[
    "{k}张轮播图",
    "轮播图（{k}张）",
    "轮播图({k}张)",
    "{k}张图的轮播",
    "{k}图轮播",
];
/// `{c}`: columns, `{g}`: card word.
pub(crate) const GRID_NOUNS: &[&str] = &["{c}{g}", "{c}{g}", "{g}{c}展示", "{g}按{c}排列"];
pub(crate) const CARD_WORDS: &[&str] = &["商品卡", "商品卡片", "商品"];
/// `{i}`: the listed item.
pub(crate) const LIST_NOUNS: &[&str] = &["{i}列表", "{i}列表"];
/// `{f}`: the parenthesised fields.
pub(crate) const FORM_NOUNS: &[&str] = &["表单{f}", "输入表单{f}", "填写表单{f}"];
/// `{a}`: the action.
pub(crate) const BUTTON_NOUNS: &[&str] = &["{a}按钮", "一个{a}按钮"];
pub(crate) const NAV_NOUNS: &[&str] = &["顶部导航栏", "顶部标题栏", "页面顶端导航栏", "上方导航栏"];
/// `{n}`: a nav-bar noun.
pub(crate) const NAV_WITH_BACK: &[&str] = &[
    "带返回按钮的{n}",
    "{n}带返回键",
    "{n}（带返回）",
    "{n}含返回按钮",
];
pub(crate) const TAB_NOUNS: &[&str] = &[
    "底部导航",
    "底部导航栏",
    "底部标签栏",
    "底部tab栏",
    "下方导航栏",
];
pub(crate) const FOOTER_NOUNS: &[&str] = &["页脚", "底部页脚", "页面底部页脚"];

pub(crate) fn column_words(columns: u8) -> &'static [&'static str] {
    match columns {
        1 => &["单列", "一列", "1列"],
        2 => &["两列", "双列", "2列"],
        3 => &["三列", "3列"],
        _ => &["四列", "4列"],
    }
}

pub(crate) fn count_words(count: u8) -> &'static [&'static str] {
    match count {
        2 => &["两", "2"],
        3 => &["三", "3"],
        4 => &["四", "4"],
        5 => &["五", "5"],
        _ => &["六", "6"],
    }
}

pub(crate) fn list_item_words(item: ListItem) -> &'static [&'static str] {
    match item {
        ListItem::Product => &["商品"],
        ListItem::Order => &["订单"],
        ListItem::Message => &["消息"],
        ListItem::Address => &["地址", "收货地址"],
        ListItem::Setting => &["设置项", "设置"],
        ListItem::Article => &["文章", "资讯"],
    }
}

pub(crate) fn field_words(field: FormField) -> &'static [&'static str] {
    match field {
        FormField::Username => &["用户名", "账号"],
        FormField::Password => &["密码"],
        FormField::Phone => &["手机号", "手机号码"],
        FormField::Email => &["邮箱", "电子邮箱"],
        FormField::Code => &["验证码"],
        FormField::Nickname => &["昵称"],
        FormField::Address => &["收货地址", "地址"],
    }
}

pub(crate) fn action_words(action: ButtonAction) -> &'static [&'static str] {
    match action {
        ButtonAction::Submit => &["提交"],
        ButtonAction::Login => &["登录"],
        ButtonAction::Register => &["注册"],
        ButtonAction::Checkout => &["结算", "去结算"],
        ButtonAction::AddToCart => &["加入购物车", "加购"],
        ButtonAction::BuyNow => &["立即购买", "马上购买"],
        ButtonAction::Logout => &["退出登录", "注销"],
    }
}

pub(crate) fn tab_words(item: TabItem) -> &'static [&'static str] {
    match item {
        TabItem::Home => &["首页"],
        TabItem::Category => &["分类"],
        TabItem::Cart => &["购物车"],
        TabItem::Messages => &["消息"],
        TabItem::Discover => &["发现"],
        TabItem::Orders => &["订单"],
        TabItem::Me => &["我的"],
    }
}

pub(crate) fn link_words(link: FooterLink) -> &'static [&'static str] {
    match link {
        FooterLink::About => &["关于我们"],
        FooterLink::Contact => &["联系我们"],
        FooterLink::Help => &["帮助中心"],
        FooterLink::Privacy => &["隐私政策"],
        FooterLink::Terms => &["用户协议"],
    }
}
