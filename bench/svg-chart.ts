// The benchmark chart, written by hand as SVG: per group, one horizontal bar per variant (median wall time, scaled
// to the group's slowest), pgkeep in blue, references in grey, limits in light grey; a red mark where a bar's goal
// ends (goal ratio × the reference's median).

import type { GroupSpec, VariantSummary } from './report.js'

const WIDTH = 960
const LABEL_W = 380
const BAR_W = 380
const ROW_H = 22
const TITLE_H = 28
const COLORS = { pgkeep: '#2f6fdf', reference: '#8c8c8c', limit: '#c8c8c8' } as const

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** A horizontal bar chart of the medians, one section per group; `title` goes on top. */
export function formatSvg(title: string, groups: GroupSpec[], rows: VariantSummary[]): string {
  const parts: string[] = []
  let y = 36
  parts.push(`<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`)
  for (const g of groups) {
    const mine = rows.filter((r) => r.spec.group === g.id)
    if (mine.length === 0) continue
    y += TITLE_H
    parts.push(`<text x="10" y="${y - 8}" font-size="13" font-weight="bold">${escapeXml(g.title)}</text>`)
    const refMs = (name: string | undefined) => mine.find((r) => r.spec.name === name)?.wallMs
    const scaleMs = Math.max(...mine.map((r) => Math.max(r.wallMs, r.spec.goalRatio && refMs(r.spec.ref) ? r.spec.goalRatio * refMs(r.spec.ref)! : 0)))
    for (const r of mine) {
      const w = Math.max(1, (r.wallMs / scaleMs) * BAR_W)
      const ratio = r.ratio === null ? '' : ` · ${r.ratio.toFixed(2)}×`
      const ref = refMs(r.spec.ref)
      const goalX = r.spec.goalRatio !== undefined && ref !== undefined ? ((r.spec.goalRatio * ref) / scaleMs) * BAR_W : undefined
      // The value goes right of the bar, and of the goal mark when that lies beyond the bar.
      const textX = LABEL_W + Math.max(w, (goalX ?? 0) + 2) + 6
      parts.push(
        `<text x="${LABEL_W - 8}" y="${y + 15}" font-size="12" text-anchor="end">${escapeXml(r.spec.name)}</text>`,
        `<rect x="${LABEL_W}" y="${y + 4}" width="${w.toFixed(1)}" height="${ROW_H - 8}" fill="${COLORS[r.spec.side]}"/>`,
        `<text x="${textX.toFixed(1)}" y="${y + 15}" font-size="12">${(r.wallMs / 1000).toFixed(2)} s${ratio}</text>`,
      )
      if (goalX !== undefined) {
        const gx = LABEL_W + goalX
        parts.push(
          `<line x1="${gx.toFixed(1)}" y1="${y + 1}" x2="${gx.toFixed(1)}" y2="${y + ROW_H - 1}" stroke="#d62728" stroke-width="2"><title>goal: ≤ ${r.spec.goalRatio} × ${escapeXml(r.spec.ref ?? '')}</title></line>`,
        )
      }
      y += ROW_H
    }
  }
  y += 14
  parts.push(
    `<rect x="10" y="${y}" width="12" height="10" fill="${COLORS.pgkeep}"/><text x="26" y="${y + 9}" font-size="11">pgkeep</text>`,
    `<rect x="90" y="${y}" width="12" height="10" fill="${COLORS.reference}"/><text x="106" y="${y + 9}" font-size="11">reference</text>`,
    `<rect x="180" y="${y}" width="12" height="10" fill="${COLORS.limit}"/><text x="196" y="${y + 9}" font-size="11">physical limit</text>`,
    `<line x1="290" y1="${y - 1}" x2="290" y2="${y + 11}" stroke="#d62728" stroke-width="2"/><text x="296" y="${y + 9}" font-size="11">goal (bars end left of it when the goal holds); median wall time, × = ratio to the group's reference</text>`,
  )
  const height = y + 24
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">\n` +
    `<rect width="100%" height="100%" fill="#ffffff"/>\n` +
    parts.join('\n') +
    '\n</svg>\n'
  )
}
