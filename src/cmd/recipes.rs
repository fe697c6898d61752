//! `recast recipes [list | show NAME|FILE]`.

use anyhow::Result;
use recast_quantize::hardware;
use recast_quantize::recipe::{Recipe, BUILTIN};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(clap::Subcommand)]
enum What {
    /// Shipped recipes with their target and layout, and the hardware table.
    List,
    /// A recipe resolved (`extends` applied, defaults filled in), as YAML.
    Show { recipe: String },
}

pub fn render_list() -> Result<String> {
    use std::fmt::Write;
    let mut o = String::new();
    let recipes: Vec<Recipe> = BUILTIN.iter().map(|(n, _)| Recipe::load(n)).collect::<Result<_, _>>()?;
    let nw = recipes.iter().map(|r| r.name.len()).max().unwrap_or(4);
    writeln!(o, "{:<nw$}  {:<12} {:<19} description", "recipe", "hardware", "layout")?;
    for r in &recipes {
        writeln!(o, "{:<nw$}  {:<12} {:<19} {}", r.name, r.target.hardware, r.layout.name(), r.description)?;
    }
    writeln!(o, "\nhardware")?;
    for h in hardware::TABLE {
        let fp8: Vec<&str> = h.fp8.iter().map(|f| f.name()).collect();
        let layouts: Vec<&str> = h.layouts.iter().map(|l| l.name()).collect();
        writeln!(
            o,
            "  {:<12} {}; fp8: {}; int: {:?}; layouts: {}",
            h.key,
            h.name,
            if fp8.is_empty() { "none".to_string() } else { fp8.join(", ") },
            h.int_bits,
            layouts.join(", ")
        )?;
    }
    Ok(o)
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.what.unwrap_or(What::List) {
        What::List => print!("{}", render_list()?),
        What::Show { recipe } => {
            let r = Recipe::load(&recipe)?;
            println!("# {} (resolved; sha256 {})", r.name, r.hash());
            print!("{r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
