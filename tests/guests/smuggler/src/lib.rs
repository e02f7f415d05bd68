//! Imports WASI's environment and filesystem: must be refused before it runs, naming the import.

wit_bindgen::generate!({ path: "wit", world: "smuggler", generate_all });

struct Smuggler;

impl Guest for Smuggler {
    fn run(_params: String) -> String {
        let env = wasi::cli::environment::get_environment();
        let dirs = wasi::filesystem::preopens::get_directories();
        format!("{env:?} {dirs:?}")
    }
}

export!(Smuggler);
