//! Stable diagnostic codes.
//!
//! Rules: a code, once released, keeps its meaning forever; retired codes are not reused.
//! Every code is documented in `docs/diagnostics.md` (a test checks this).

macro_rules! codes {
    ($($name:ident = $num:literal, $summary:literal;)*) => {
        /// A stable diagnostic code, rendered as `triton::E0nn` (errors) or `triton::W0nn` (warnings).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($name,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as shown to users, e.g. `E041`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $num,)* }
            }

            /// A one-line summary of what the code means (for docs and `--explain`).
            pub fn summary(self) -> &'static str {
                match self { $(Code::$name => $summary,)* }
            }
        }
    };
}

codes! {
    // Reading and lexing
    FileUnreadable = "E001", "a source file could not be read";
    NotUtf8 = "E002", "a source file is not valid UTF-8";
    FileTooLarge = "E003", "a source file is larger than the limit";
    InvalidCharacter = "E004", "a character that cannot start any token";
    UnterminatedString = "E005", "a string literal without its closing quote";
    IntegerTooLarge = "E006", "an integer literal that does not fit in 64 bits";
    InvalidNumber = "E007", "a malformed number literal";
    NestingTooDeep = "E008", "brackets or expressions nested deeper than the limit";
    InvalidEscape = "E009", "an unknown or malformed escape sequence in a string";
    // Parsing
    UnexpectedToken = "E010", "a token where the grammar expects something else";
    UnexpectedEof = "E011", "the file ends in the middle of a construct";
    InvalidUse = "E012", "a malformed `use` path";
    EmptyFile = "E013", "a file that defines no layer or model";
    InvalidInstance = "E014", "a sub-layer field whose value is not a layer instance";
    // Modules and names
    ModuleNotFound = "E020", "a `use` that names a module that does not exist";
    ImportCycle = "E021", "files that import each other in a cycle";
    ImportNotFound = "E022", "a `use` that names an item the module does not define";
    DuplicateDefinition = "E023", "two definitions with the same name in one scope";
    UnknownLayer = "E024", "a layer name that is not defined or imported";
    UnknownName = "E025", "a name that is not defined in this scope";
    UnknownFunction = "E026", "a call to something that is neither a built-in op nor a sub-layer";
    NotCallable = "E027", "a call of a value that is not a layer or op";
    // Arguments
    ArgumentCount = "E030", "too many or too few arguments";
    UnknownArgument = "E031", "a keyword argument the callee does not take";
    DuplicateArgument = "E032", "an argument given twice";
    ArgumentKind = "E033", "an argument of the wrong kind (tensor, int, float, bool, string, list)";
    InvalidArgument = "E034", "an argument with a value the callee does not accept";
    RequirementFailed = "E035", "a layer's `require` condition that is false for its arguments";
    // Types and shapes
    DtypeMismatch = "E040", "a tensor of the wrong element type";
    ShapeMismatch = "E041", "a tensor dimension that differs from the expected one";
    RankMismatch = "E042", "a tensor with the wrong number of dimensions";
    BroadcastMismatch = "E043", "two shapes that cannot be broadcast together";
    InvalidDimension = "E044", "a dimension that is zero or negative";
    SizeOverflow = "E045", "a tensor or count too large to represent";
    DivisionByZero = "E046", "a compile-time division or remainder by zero";
    CannotInferDim = "E047", "a symbolic dimension that cannot be inferred from the arguments";
    UnknownDtype = "E048", "a type name that is not a dtype";
    InvalidDeclaration = "E049", "a weight, param or buffer declaration that is not allowed";
    // Layers and functions
    ReturnMismatch = "E050", "a return value whose type differs from the declared one";
    MissingReturn = "E051", "a function without a `return`";
    UnreachableCode = "E052", "a statement after `return`";
    RecursiveLayer = "E053", "layers that instantiate themselves without end";
    MissingForward = "E054", "a layer without a `fn forward`";
    ModelArguments = "E055", "a model with parameters that have no default";
    ConditionalName = "E056", "a name declared under an `if` whose condition is false here";
    TooManyInstances = "E057", "more layer instances than the limit";
    NotCompileTime = "E058", "a value needed at compile time that is only known at run time";
    InvalidOperands = "E059", "an operator applied to values it does not accept";
    // Warnings
    UnusedLayer = "W001", "a sub-layer that is declared but never called";
    UnusedLet = "W002", "a `let` binding that is never used";
    UnusedImport = "W003", "an imported name that is never used";
}
