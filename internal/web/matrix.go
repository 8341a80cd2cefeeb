package web

import (
	"html"
	"html/template"
	"strconv"
	"strings"
	"time"
)

// matrixRows renders the overview's table body. It is the one part of
// a page that grows with the number of targets, so it is written directly
// instead of through html/template's contextual escaper, which costs
// several times more per cell. Every value goes through html.EscapeString
// (safe in text and quoted attributes) and every URL is built from
// path-escaped elements below /ui/.
func matrixRows(o *Overview) template.HTML {
	var b strings.Builder
	b.Grow(len(o.Matrix) * (120 + 260*len(o.Columns)))
	for _, r := range o.Matrix {
		p := html.EscapeString(r.Project)
		b.WriteString(`<tr data-project="`)
		b.WriteString(p)
		b.WriteString(`"><th class="name"><a href="/ui/?project=`)
		b.WriteString(html.EscapeString(queryEscape(r.Project)))
		b.WriteString(`">`)
		b.WriteString(p)
		b.WriteString("</a></th>")
		for i, c := range r.Cells {
			if c == nil {
				b.WriteString(`<td class="cell none" data-col="`)
				b.WriteString(html.EscapeString(o.Columns[i]))
				b.WriteString(`"></td>`)
				continue
			}
			writeCell(&b, c, o.Now)
		}
		b.WriteString("</tr>\n")
	}
	return template.HTML(b.String())
}

func writeCell(b *strings.Builder, c *Cell, now time.Time) {
	st := html.EscapeString(string(c.State))
	b.WriteString(`<td class="cell st-`)
	b.WriteString(st)
	b.WriteString(`" data-col="`)
	b.WriteString(html.EscapeString(c.Profile))
	b.WriteString(`" data-key="`)
	b.WriteString(html.EscapeString(c.Key))
	b.WriteString(`" data-state="`)
	b.WriteString(st)
	b.WriteString(`" data-since="`)
	b.WriteString(strconv.FormatInt(unixMilli(c.Since), 10))
	b.WriteString(`" data-started="`)
	b.WriteString(strconv.FormatInt(unixMilli(c.Started), 10))
	b.WriteString(`" data-finished="`)
	b.WriteString(strconv.FormatInt(unixMilli(c.Finished), 10))
	b.WriteString(`"><a href="`)
	b.WriteString(html.EscapeString(targetURL(c.Key)))
	b.WriteString(`"><span class="state">`)
	b.WriteString(st)
	b.WriteString(`</span> <span class="age">`)
	if !c.Since.IsZero() {
		b.WriteString(short(now.Sub(c.Since)))
		b.WriteString(" ago")
	}
	b.WriteString(`</span> <span class="dur">`)
	t := Target{State: c.State, Started: c.Started, Finished: c.Finished}
	if d := t.Duration(now); d > 0 {
		b.WriteString(short(d))
	}
	b.WriteString("</span>")
	if c.Reason != "" {
		b.WriteString(`<span class="reason">`)
		b.WriteString(html.EscapeString(c.Reason))
		b.WriteString("</span>")
	}
	b.WriteString("</a></td>")
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
