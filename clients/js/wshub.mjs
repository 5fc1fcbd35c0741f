/* wshub.mjs -- the ES module face of wshub.js: import { WsHub } from "./wshub.mjs".
 *
 * wshub.js holds the code and stays loadable as a classic <script>, which rules out `export`
 * there. Importing it for its side effect defines globalThis.WsHub, re-exported here.
 */
import "./wshub.js";

export const WsHub = globalThis.WsHub;
export default WsHub;
