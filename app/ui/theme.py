"""The look: a Gradio theme whose fonts are served by the app itself (never Google Fonts), and the page's CSS."""
from __future__ import annotations

import gradio as gr


def theme() -> gr.themes.Base:
    sans = [gr.themes.LocalFont("IBM Plex Sans", weights=(400, 600, 700)), "ui-sans-serif", "system-ui",
            "sans-serif"]
    mono = [gr.themes.LocalFont("IBM Plex Mono", weights=(400, 600)), "ui-monospace", "monospace"]
    return gr.themes.Soft(primary_hue="teal", secondary_hue="sky", neutral_hue="slate", font=sans,
                          font_mono=mono, radius_size="md").set(
        body_background_fill="#f6f8fa", block_shadow="0 1px 2px rgba(15, 23, 42, .06)",
        button_primary_background_fill="#0f766e", button_primary_background_fill_hover="#115e59",
    )


CSS = """
.gradio-container { max-width: 1280px !important; width: 100% !important; margin: 0 auto !important; }
footer { display: none !important; }
#gw-header { display: flex; align-items: center; justify-content: space-between; gap: 16px;
  padding: 14px 18px; border-radius: 12px; background: linear-gradient(90deg, #0f766e, #155e75); color: #fff; }
#gw-header .gw-brand { display: flex; align-items: center; gap: 12px; }
#gw-header .gw-logo { width: 34px; height: 34px; border-radius: 9px; background: rgba(255,255,255,.16);
  display: grid; place-items: center; font-weight: 700; font-size: 18px; }
#gw-header h1 { margin: 0; font-size: 20px; font-weight: 700; color: #fff; }
#gw-header .gw-tagline { font-size: 13px; opacity: .85; }
#gw-header .gw-who { font-size: 13px; text-align: right; line-height: 1.5; }
#gw-header .gw-who b { font-weight: 600; }
#gw-header a { color: #fff; text-decoration: underline; margin-left: 8px; }
.gw-role { display: inline-block; padding: 0 8px; border-radius: 999px; background: rgba(255,255,255,.18);
  font-size: 12px; margin-left: 4px; }

/* answers */
.gw-answer { line-height: 1.6; position: relative; }  /* the pop-overs' anchor */
.gw-streaming .gw-cursor { display: inline-block; width: 7px; height: 1em; margin-left: 2px; background: #0f766e;
  vertical-align: text-bottom; animation: gw-blink 1s steps(2, start) infinite; }
@keyframes gw-blink { to { visibility: hidden; } }
.gw-thinking { color: #64748b; display: flex; align-items: center; gap: 8px; }
.gw-dots i { display: inline-block; width: 6px; height: 6px; margin-right: 3px; border-radius: 50%;
  background: #0f766e; animation: gw-bounce 1.2s infinite ease-in-out; }
.gw-dots i:nth-child(2) { animation-delay: .15s; } .gw-dots i:nth-child(3) { animation-delay: .3s; }
@keyframes gw-bounce { 0%, 80%, 100% { opacity: .25; } 40% { opacity: 1; } }
.gw-cite-n { display: inline-block; min-width: 1.35em; padding: 0 5px; margin: 0 1px; border-radius: 6px;
  background: #ccfbf1; color: #115e59; font-size: .78em; font-weight: 700; text-align: center;
  line-height: 1.5; vertical-align: .12em; }
.gw-cite-n::before { content: "["; } .gw-cite-n::after { content: "]"; }
.gw-cite { position: static; cursor: pointer; outline: none; }
.gw-cite:hover .gw-cite-n, .gw-cite:focus .gw-cite-n { background: #0f766e; color: #fff; }
/* under the marker's line, from the answer's left edge: a marker near the chat's right edge is not cut off */
.gw-pop { display: none; position: absolute; z-index: 50; left: 0; top: auto; margin-top: 4px; width: min(440px, 60vw);
  padding: 12px 14px; border-radius: 10px; background: #fff; color: #0f172a; border: 1px solid #cbd5e1;
  box-shadow: 0 10px 30px rgba(15, 23, 42, .18); font-size: 13px; line-height: 1.5; cursor: auto;
  white-space: normal; text-align: left; }
.gw-cite:focus .gw-pop, .gw-cite:focus-within .gw-pop { display: block; }
#gw-chat .message-row:has(.gw-cite:focus-within), #gw-chat .message:has(.gw-cite:focus-within) {
  position: relative; z-index: 60; overflow: visible; }  /* the open pop-over above the buttons below it */
.gw-pop-doc { display: block; font-weight: 700; color: #115e59; }
.gw-pop-loc { display: block; color: #64748b; font-size: 12px; margin-bottom: 6px; }
.gw-pop-quote { display: block; border-left: 3px solid #5eead4; padding-left: 10px; color: #334155;
  max-height: 220px; overflow: auto; }
.gw-state { border-radius: 10px; padding: 10px 14px; line-height: 1.5; }
.gw-state-title { font-weight: 700; margin-bottom: 2px; }
.gw-notfound { background: #fff7ed; border: 1px solid #fed7aa; color: #7c2d12; }
.gw-blocked { background: #fef2f2; border: 1px solid #fecaca; color: #7f1d1d; }
.gw-error { background: #f1f5f9; border: 1px solid #cbd5e1; color: #334155; }
.gw-state-why { font-size: 12px; opacity: .8; margin-top: 4px; }
.gw-flags { list-style: none; padding: 0 !important; margin: 10px 0 0 0 !important; }
.gw-flag { font-size: 12px; padding: 4px 8px; border-radius: 6px; margin: 3px 0 !important;
  background: #f1f5f9; color: #334155; border-left: 3px solid #94a3b8; }
.gw-flag-redacted { border-left-color: #0ea5e9; }
.gw-flag-excluded, .gw-flag-flagged { border-left-color: #f59e0b; }
.gw-flag-blocked { border-left-color: #ef4444; }
.gw-meta { margin-top: 8px; font-size: 11px; color: #94a3b8; }
.gw-searched { margin-top: 8px; font-size: 12px; color: #475569; }
.gw-searched q { font-style: italic; quotes: "“" "”"; }

/* conversation sidebar */
#gw-sidebar { gap: 10px; }
#gw-history .wrap { flex-direction: column; flex-wrap: nowrap; gap: 4px; max-height: 470px; overflow-y: auto; }
#gw-history .wrap label { width: 100%; margin: 0; padding: 7px 10px; border-radius: 8px; font-size: 13px;
  line-height: 1.35; background: transparent; border: 1px solid transparent; box-shadow: none; cursor: pointer; }
#gw-history .wrap label:hover { background: #f1f5f9; }
#gw-history .wrap label.selected { background: #ccfbf1; border-color: #5eead4; color: #115e59; font-weight: 600; }
#gw-history .wrap label input { display: none; }
#gw-feedback { align-items: end; }

/* side panel */
.gw-panel-title { font-weight: 700; font-size: 14px; color: #0f172a; margin: 2px 0 6px 0; }
.gw-sources { display: flex; flex-direction: column; gap: 10px; }
.gw-source { border: 1px solid #e2e8f0; border-radius: 10px; padding: 10px 12px; background: #fff; }
.gw-source-head { display: flex; align-items: center; gap: 6px; }
.gw-source-doc { font-weight: 600; color: #0f172a; word-break: break-all; }
.gw-source-loc { font-size: 12px; color: #64748b; margin: 2px 0 0 0; }
.gw-source blockquote { margin: 8px 0 4px 0 !important; padding: 0 0 0 10px !important;
  border-left: 3px solid #5eead4 !important; color: #334155; font-size: 13px; line-height: 1.5;
  max-height: 180px; overflow: auto; }
.gw-source-score { font-size: 11px; color: #94a3b8; }
.gw-sources-empty { color: #64748b; font-size: 13px; padding: 6px 2px; }
.gw-guards { list-style: none; padding: 0 !important; margin: 0 !important; font-size: 13px; }
.gw-guard { margin: 0 0 6px 0 !important; }
.gw-guard-state { font-size: 11px; padding: 0 6px; border-radius: 999px; margin-left: 4px; }
.gw-guard-on .gw-guard-state { background: #ccfbf1; color: #115e59; }
.gw-guard-off .gw-guard-state { background: #e2e8f0; color: #475569; }
.gw-guard-desc { color: #64748b; font-size: 12px; }

/* admin */
.gw-stats { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 10px; }
.gw-stat { background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; padding: 10px 12px; }
.gw-stat .v { font-size: 22px; font-weight: 700; color: #0f172a; }
.gw-stat .k { font-size: 12px; color: #64748b; }
.gw-kv { font-size: 13px; color: #334155; margin-top: 8px; line-height: 1.6; }
.gw-progress { height: 12px; border-radius: 999px; background: #e2e8f0; overflow: hidden; }
.gw-progress > div { height: 100%; background: linear-gradient(90deg, #14b8a6, #0f766e); transition: width .3s; }
.gw-progress-indeterminate > div { width: 35% !important; animation: gw-slide 1.2s infinite ease-in-out; }
@keyframes gw-slide { 0% { margin-left: -35%; } 100% { margin-left: 100%; } }
.gw-progress-text { font-size: 13px; color: #334155; margin-top: 6px; }
.gw-summary { font-size: 13px; border-radius: 10px; padding: 10px 12px; background: #f0fdfa;
  border: 1px solid #99f6e4; color: #134e4a; }
.gw-summary.gw-failed { background: #fef2f2; border-color: #fecaca; color: #7f1d1d; }
.gw-problems { margin: 6px 0 0 18px !important; font-size: 12px; }
.gw-note { font-size: 12px; color: #64748b; }
"""

HEADER = """<div id="gw-header"><div class="gw-brand"><div class="gw-logo">G</div><div><h1>Groundwork</h1>
<div class="gw-tagline">Answers from your company's documents, with the passages they come from</div></div></div>
<div class="gw-who">{who}</div></div>"""
