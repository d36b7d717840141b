// zzz.js as an ES module: import { Zzz } from "/__zzz/zzz.mjs" (or import Zzz from ...).
// The classic script cannot also hold `export` statements, so this wrapper runs it (it sets
// globalThis.Zzz) and re-exports that one object; both ways of loading share it.
import "./zzz.js";

const Zzz = globalThis.Zzz;
export { Zzz };
export default Zzz;
