// A client-go dynamic informer against the real server, as controllers run them: it must sync
// the existing entries, then see a later create, update and delete. With
// KUBE_FEATURE_WatchListClient=true, client-go streams the initial state with a WatchList
// request (sendInitialEvents) instead of a LIST; the program reports which requests it made.
//
// Usage: informer KUBECONFIG NAMESPACE EXPECTED_INITIAL_COUNT
//        informer KUBECONFIG NAMESPACE mirror
// Prints one JSON line; exits non-zero with a reason on any failure. In mirror mode it only
// follows: once an object named "sentinel" arrives it prints every object's resourceVersion,
// as its cache holds them.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

var gvr = schema.GroupVersionResource{Group: "catalog.automotive.io", Version: "v1alpha1", Resource: "catalogimages"}

// requestLog counts the list and watch requests the informer makes.
type requestLog struct {
	mu                sync.Mutex
	lists, watchLists int
	next              http.RoundTripper
}

func (l *requestLog) RoundTrip(r *http.Request) (*http.Response, error) {
	q := r.URL.Query()
	if r.Method == http.MethodGet && q.Get("watch") != "true" && q.Get("limit") != "" {
		l.mu.Lock()
		l.lists++
		l.mu.Unlock()
	}
	if q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true" {
		l.mu.Lock()
		l.watchLists++
		l.mu.Unlock()
	}
	return l.next.RoundTrip(r)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func waitFor(events <-chan string, want string) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-events:
			if got == want {
				return
			}
		case <-timeout:
			fail("timed out waiting for %s", want)
		}
	}
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: informer KUBECONFIG NAMESPACE EXPECTED_INITIAL_COUNT|mirror")
	}
	namespace := os.Args[2]
	mirror := os.Args[3] == "mirror"
	expected, err := strconv.Atoi(os.Args[3])
	if err != nil && !mirror {
		fail("bad count: %v", err)
	}
	config, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		fail("kubeconfig: %v", err)
	}
	log := &requestLog{}
	config.WrapTransport = func(next http.RoundTripper) http.RoundTripper { log.next = next; return log }
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		fail("client: %v", err)
	}

	events := make(chan string, 1024)
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, namespace, nil)
	informer := factory.ForResource(gvr).Informer()
	name := func(obj interface{}) string {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			return u.GetName()
		}
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			return d.Key
		}
		return "?"
	}
	informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { events <- "add " + name(obj) },
		UpdateFunc: func(_, obj interface{}) { events <- "update " + name(obj) },
		DeleteFunc: func(obj interface{}) { events <- "delete " + name(obj) },
	})
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	syncCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), informer.HasSynced) {
		fail("the informer did not sync")
	}
	if mirror {
		waitFor(events, "add sentinel")
		versions := map[string]string{}
		for _, obj := range informer.GetStore().List() {
			u := obj.(*unstructured.Unstructured)
			versions[u.GetName()] = u.GetResourceVersion()
		}
		out, _ := json.Marshal(versions)
		fmt.Println(string(out))
		return
	}
	synced := len(informer.GetStore().List())
	if synced != expected {
		fail("synced %d objects, expected %d", synced, expected)
	}

	resource := client.Resource(gvr).Namespace(namespace)
	object := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "catalog.automotive.io/v1alpha1",
		"kind":       "CatalogImage",
		"metadata":   map[string]interface{}{"name": "from-client-go"},
		"spec":       map[string]interface{}{"registryUrl": "quay.io/automotive/autosd:client-go"},
	}}
	ctx := context.Background()
	created, err := resource.Create(ctx, object, metav1.CreateOptions{})
	if err != nil {
		fail("create: %v", err)
	}
	waitFor(events, "add from-client-go")
	if err := unstructured.SetNestedStringSlice(created.Object, []string{"go"}, "spec", "tags"); err != nil {
		fail("set tags: %v", err)
	}
	if _, err := resource.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		fail("update: %v", err)
	}
	waitFor(events, "update from-client-go")
	if err := resource.Delete(ctx, "from-client-go", metav1.DeleteOptions{}); err != nil {
		fail("delete: %v", err)
	}
	waitFor(events, "delete from-client-go")

	log.mu.Lock()
	defer log.mu.Unlock()
	out, _ := json.Marshal(map[string]int{"synced": synced, "lists": log.lists, "watchLists": log.watchLists})
	fmt.Println(string(out))
}
