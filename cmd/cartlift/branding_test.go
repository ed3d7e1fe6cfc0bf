package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// Bad email layout settings stop the start, naming the variable.
func TestBrandingConfigErrors(t *testing.T) {
	for env, bad := range map[string]string{
		"CARTLIFT_BRAND_COLOR":     "blue",
		"CARTLIFT_EMAIL_IMAGE_URL": "https://cdn.shop.example/p/image.jpg", // no {sku}
		"CARTLIFT_SHOP_NAME":       "Shop\nBcc: x",
	} {
		_, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(map[string]string{env: bad}))
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: err %v, want one naming %s", env, bad, err, env)
		}
	}
	cfg, err := loadActionsConfig(context.Background(), envconfig.MapLookuper(map[string]string{
		"CARTLIFT_SHOP_NAME": "Nordwind Outdoor", "CARTLIFT_BRAND_COLOR": "#0B6E4F",
		"CARTLIFT_EMAIL_IMAGE_URL": "https://cdn.shop.example/p/{sku}.jpg",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShopName != "Nordwind Outdoor" || cfg.BrandColor != "#0B6E4F" || cfg.ImageURL != "https://cdn.shop.example/p/{sku}.jpg" {
		t.Errorf("config %+v", cfg)
	}
}
