package analytics_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDashboard checks deploy/grafana/cartlift.json: every Prometheus
// metric a panel uses is one cartlift registers (named in the Go sources
// of cmd/cartlift), and every ClickHouse panel's SQL runs on a real server
// with Grafana's time macro filled in.
func TestDashboard(t *testing.T) {
	panels := dashboardPanels(t)
	registered := map[string]bool{}
	sources, _ := filepath.Glob("../cmd/cartlift/*.go")
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(cartlift_[a-z_]+)"`).FindAllStringSubmatch(string(b), -1) {
			registered[m[1]] = true
		}
	}
	if len(registered) < 10 {
		t.Fatalf("found only %d metric names in cmd/cartlift", len(registered))
	}
	conn, _ := migrated(t)
	metric := regexp.MustCompile(`cartlift_[a-z_]+`)
	var prom, sql int
	for _, p := range panels {
		for _, tg := range p.Targets {
			switch tg.Datasource.Type {
			case "prometheus":
				prom++
				for _, name := range metric.FindAllString(tg.Expr, -1) {
					base := name
					for _, suffix := range []string{"_bucket", "_count", "_sum"} {
						if trimmed, ok := strings.CutSuffix(name, suffix); ok && registered[trimmed] {
							base = trimmed
						}
					}
					if !registered[base] {
						t.Errorf("panel %q uses %s, which cartlift does not export", p.Title, name)
					}
				}
			case "grafana-clickhouse-datasource":
				sql++
				q := panelSQL(tg.RawSQL)
				rows, err := conn.Query(context.Background(), q)
				if err != nil {
					t.Errorf("panel %q: %v\n%s", p.Title, err, q)
					continue
				}
				rows.Close()
			default:
				t.Errorf("panel %q: data source type %q", p.Title, tg.Datasource.Type)
			}
		}
	}
	if prom < 10 || sql < 4 {
		t.Fatalf("%d Prometheus and %d ClickHouse queries; the dashboard lost panels", prom, sql)
	}
}

// dashboardPanels returns the panels of deploy/grafana/cartlift.json,
// those of collapsed rows included.
func dashboardPanels(t *testing.T) []dashboardPanel {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/cartlift.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	// A collapsed row holds its panels.
	var panels []dashboardPanel
	var flatten func([]dashboardPanel)
	flatten = func(ps []dashboardPanel) {
		for _, p := range ps {
			panels = append(panels, p)
			flatten(p.Panels)
		}
	}
	flatten(dash.Panels)
	return panels
}

// panelSQL is a ClickHouse panel's SQL with Grafana's time macro filled in
// (the last 7 days).
func panelSQL(raw string) string {
	return regexp.MustCompile(`\$__timeFilter\((\w+)\)`).ReplaceAllString(raw, "$1 >= now() - INTERVAL 7 DAY")
}

type dashboardPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Datasource struct {
			Type string `json:"type"`
		} `json:"datasource"`
		Expr   string `json:"expr"`
		RawSQL string `json:"rawSql"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}
